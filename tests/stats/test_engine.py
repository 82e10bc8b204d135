"""disproportionality(): INTERFACE columns, flags, validation, one row per pair, overflow."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.errors import PipelineError
from pipeline.stats import OUTPUT_COLUMNS, Thresholds, disproportionality

INTERFACE = ("drug, event, a, b, c, d, n_total, expected, prr, prr_lo, prr_hi, chi2, chi2_yates, ror, ror_lo, "
             "ror_hi, ic, ic025, ic975, ebgm, eb05, eb95, fisher_p, fisher_midp, signal_prr, signal_ror, "
             "signal_ic, signal_ebgm").split(", ")


def counts_from_cells(cases):
    return pd.DataFrame({
        "drug": [c["id"] for c in cases], "event": ["e"] * len(cases),
        "a": [c["a"] for c in cases], "n_drug": [c["a"] + c["b"] for c in cases],
        "n_event": [c["a"] + c["c"] for c in cases], "n_total": [c["n_total"] for c in cases]})


def test_columns_order_and_types(caers_counts):
    rows, fit = disproportionality(caers_counts)
    assert list(rows.columns[:len(INTERFACE)]) == INTERFACE == list(OUTPUT_COLUMNS)
    assert "fisher_q" in rows.columns
    for c in ("a", "b", "c", "d", "n_total"):
        assert rows[c].dtype == np.int64
    for c in ("expected", "prr", "ror", "ic", "ebgm", "eb05", "fisher_p"):
        assert rows[c].dtype == np.float64
    for c in ("signal_prr", "signal_ror", "signal_ic", "signal_ebgm"):
        assert rows[c].dtype == bool
    # exactly one row per (drug, event): one PT label mapped to several MedDRA codes must not explode rows
    assert len(rows) == caers_counts.num_rows and not rows.duplicated(["drug", "event"]).any()
    assert (rows["a"] + rows["b"] + rows["c"] + rows["d"] == rows["n_total"]).all()
    assert fit.converged and rows["ebgm"].notna().all()
    assert (rows["eb05"] < rows["ebgm"]).all() and (rows["ebgm"] < rows["eb95"]).all()


def test_reference_rows_through_the_engine(ref_cases):
    rows, _ = disproportionality(counts_from_cells(ref_cases))
    for case, (_, r) in zip(ref_cases, rows.iterrows()):
        assert (r["a"], r["b"], r["c"], r["d"]) == (case["a"], case["b"], case["c"], case["d"])
        for k in ("expected", "prr", "prr_lo", "prr_hi", "ror", "ror_lo", "ror_hi", "chi2", "chi2_yates",
                  "fisher_p", "fisher_midp", "ic", "ic025", "ic975"):
            want = float(case[k])
            if math.isnan(want):
                assert math.isnan(r[k]), (case["id"], k)
            else:
                assert r[k] == pytest.approx(want, rel=1e-9, abs=1e-12), (case["id"], k)


def test_flags_threshold_check(ref_cases):
    """pvda-PRR: Yates χ² ≥ 4 but PRR 0.5 → no signal_prr; pvda-ROR raises PRR, ROR and IC flags."""
    rows, _ = disproportionality(counts_from_cells(ref_cases))
    r = rows.set_index("drug")
    assert r.loc["pvda_prr", "chi2_yates"] >= 4 and not r.loc["pvda_prr", "signal_prr"]
    assert r.loc["pvda_ror", ["signal_prr", "signal_ror", "signal_ic"]].all()
    assert not r.loc["noren06_s4", ["signal_prr", "signal_ror", "signal_ic"]].any()
    # NaN never flags: the b = 0 row has ror_lo NaN
    assert math.isnan(r.loc["zero_cell_b0", "ror_lo"]) and not r.loc["zero_cell_b0", "signal_ror"]
    strict, _ = disproportionality(counts_from_cells(ref_cases), thresholds={"prr_min_a": 1000})
    assert not strict["signal_prr"].any()
    assert Thresholds().as_dict() == {"prr_min_a": 3, "prr_min": 2.0, "chi2_yates_min": 4.0, "ror_min_a": 3,
                                      "ror_lo_min": 1.0, "ic025_min": 0.0, "eb05_min": 2.0, "ebgm_min_a": 0}
    with pytest.raises(PipelineError, match="unknown"):
        Thresholds.from_mapping({"prr": 2})
    # signal_ebgm's minimum a is a rule of the engine, not a flag patched afterwards
    ebgm = rows["eb05"].to_numpy() >= 2.0
    assert (rows["signal_ebgm"].to_numpy() == ebgm).all()
    a = rows["a"].to_numpy()
    cut = int(np.median(a[ebgm])) + 1 if ebgm.any() else 1
    min_a, _ = disproportionality(counts_from_cells(ref_cases), thresholds={"ebgm_min_a": cut})
    assert (min_a["signal_ebgm"].to_numpy() == (ebgm & (a >= cut))).all()


def test_config_keys_name_every_rule():
    """The config's [thresholds] names map onto every field, once; the shipped config builds the same rules."""
    from pipeline.settings import load_config

    assert sorted(Thresholds.CONFIG_KEYS.values()) == sorted(Thresholds().as_dict())
    table = {k: i + 1 for i, k in enumerate(Thresholds.CONFIG_KEYS)}
    t = Thresholds.from_config({**table, "unmapped_share_max": 0.5})
    assert [getattr(t, f) for f in Thresholds.CONFIG_KEYS.values()] == list(table.values())
    assert load_config().thresholds == Thresholds(ebgm_min_a=3)
    assert Thresholds().replace({"eb05_min": 3}).eb05_min == 3.0 and Thresholds().replace(None) == Thresholds()


def test_haldane_option_through_engine(ref_cases):
    case = [c for c in ref_cases if c["id"] == "zero_cell_b0"]
    plain, _ = disproportionality(counts_from_cells(case))
    corr, _ = disproportionality(counts_from_cells(case), haldane=True)
    assert plain["ror"].iat[0] == math.inf and corr["ror"].iat[0] == pytest.approx(536.853659, abs=1e-6)
    assert corr["prr"].iat[0] == plain["prr"].iat[0] == pytest.approx(51, rel=1e-12)


def test_overflow_margins_1e5():
    """Peer defect 10: n_drug = n_event = 1e5, N = 2e7, given as int32."""
    c = pd.DataFrame({"drug": ["x"], "event": ["y"], "a": np.array([1000], np.int32),
                      "n_drug": np.array([100_000], np.int32), "n_event": np.array([100_000], np.int32),
                      "n_total": np.array([20_000_000], np.int32)})
    rows, _ = disproportionality(c)
    assert rows["expected"].iat[0] == 500.0
    assert rows["d"].iat[0] == 20_000_000 - 200_000 + 1000
    assert rows["prr"].iat[0] == pytest.approx((1000 / 1e5) / (99_000 / (2e7 - 1e5)), rel=1e-12)


@pytest.mark.parametrize("mutate, msg", [
    (lambda df: df.drop(columns=["n_event"]), "missing column"),
    (lambda df: df.assign(a=-1), "negative"),
    (lambda df: df.assign(a=df["n_drug"] + 1), "a > n_drug"),
    (lambda df: df.assign(n_total=1), "n_total"),
    (lambda df: pd.concat([df, df.iloc[:1]]), "duplicate"),
    (lambda df: df.assign(a=0.5), "non-integer"),
])
def test_bad_counts_raise(ref_cases, mutate, msg):
    with pytest.raises(PipelineError, match=msg):
        disproportionality(mutate(counts_from_cells(ref_cases)))


def test_bad_options_raise(ref_cases):
    with pytest.raises(PipelineError, match="likelihood"):
        disproportionality(counts_from_cells(ref_cases), mgps_likelihood="vigipy")
    with pytest.raises(PipelineError, match="confidence"):
        disproportionality(counts_from_cells(ref_cases), confidence_level=95)


def test_fisher_q_is_bh_of_fisher_p(caers_counts):
    from statsmodels.stats.multitest import multipletests

    rows, _ = disproportionality(caers_counts)
    # one family per drug (all rows here have a >= 1)
    for drug, g in rows.groupby("drug"):
        np.testing.assert_allclose(g["fisher_q"], multipletests(g["fisher_p"], method="fdr_bh")[1], rtol=1e-12)


def test_fisher_q_families_and_zero_rows():
    """BH within each family key over the rows with a >= 1; NaN where a = 0; checked against statsmodels."""
    from statsmodels.stats.multitest import multipletests

    from pipeline.stats.frequentist import bh_qvalues_by

    rng = np.random.default_rng(3)
    p = rng.uniform(size=500) ** 3
    fam = rng.choice(["ketamine|pt", "ketamine|group", "esketamine|pt"], 500)
    tested = rng.random(500) < 0.8
    p[~tested] = 1.0  # a = 0 rows have p = 1: they must not dilute the family
    q = bh_qvalues_by(p, fam, tested)
    assert np.isnan(q[~tested]).all()
    for f in np.unique(fam):
        k = (fam == f) & tested
        np.testing.assert_allclose(q[k], multipletests(p[k], method="fdr_bh")[1], rtol=1e-12)


def test_substance_without_reports_and_zero_rows():
    """Focus grids include a = 0 rows and substances with no report (n_drug = 0): formulas, no crash."""
    from pipeline.stats.mgps import MgpsFit

    c = pd.DataFrame({"drug": ["arketamine", "ketamine"], "event": ["e", "e"], "a": [0, 0],
                      "n_drug": [0, 10], "n_event": [50, 50], "n_total": [1000, 1000]})
    fit = MgpsFit(theta=(0.2, 0.1, 2.0, 4.0, 0.3), loglik=0.0, converged=True)
    rows, _ = disproportionality(c, mgps_fit=fit)
    r0, r1 = rows.iloc[0], rows.iloc[1]
    assert r0["expected"] == 0.0 and math.isnan(r0["prr"]) and math.isnan(r0["chi2"])
    assert r0["ic"] == 0.0 and np.isfinite(r0["ic025"]) and r0["fisher_p"] == 1.0
    # E = 0: the posterior is the prior, EBGM = prior geometric mean
    from scipy.special import digamma

    gm = np.exp(0.3 * (digamma(0.2) - np.log(0.1)) + 0.7 * (digamma(2.0) - np.log(4.0)))
    assert r0["ebgm"] == pytest.approx(gm, rel=1e-12)
    assert r1["prr"] == 0.0 and r1["ror"] == 0.0 and not rows[["signal_prr", "signal_ror", "signal_ic"]].any().any()
