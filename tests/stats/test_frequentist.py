"""Frequentist statistics: the reference 2x2 cases, pvda IC values, scipy/statsmodels oracles, zero cells."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from scipy.stats.contingency import odds_ratio, relative_risk

from pipeline.stats import frequentist as fq

CLOSED = ["expected", "prr", "prr_lo", "prr_hi", "ror", "ror_lo", "ror_hi", "chi2", "chi2_yates", "fisher_p",
          "fisher_midp"]
IC = ["ic", "ic025", "ic975"]


def all_stats(a, b, c, d, **kw):
    out = {"expected": fq.expected(a, b, c, d)}
    out["prr"], out["prr_lo"], out["prr_hi"] = fq.prr(a, b, c, d, **kw)
    out["ror"], out["ror_lo"], out["ror_hi"] = fq.ror(a, b, c, d, **kw)
    out["chi2"], out["chi2_yates"] = fq.chi2_pearson(a, b, c, d), fq.chi2_yates(a, b, c, d)
    out["fisher_p"], out["fisher_midp"] = fq.fisher_one_sided(a, b, c, d)
    out["ic"], out["ic025"], out["ic975"] = fq.ic_noren(a, out["expected"])
    return out


def assert_same(got, want, rel=0.0, abs_=0.0, label=""):
    want = float(want)
    got = float(got)
    if math.isnan(want):
        assert math.isnan(got), f"{label}: want NaN, got {got}"
    elif math.isinf(want):
        assert got == want, f"{label}: want {want}, got {got}"
    else:
        assert got == pytest.approx(want, rel=rel, abs=abs_), label


def test_reference_cases_all_columns(ref_cases):
    """Every reference-case value: rel 1e-9 for closed forms and Fisher, abs 1e-9 for exact IC limits."""
    assert len(ref_cases) == 8
    a, b, c, d = (np.array([x[k] for x in ref_cases]) for k in "abcd")
    got = all_stats(a, b, c, d)
    for i, case in enumerate(ref_cases):
        for k in CLOSED:
            assert_same(got[k][i], case[k], rel=1e-9, label=f"{case['id']} {k}")
        for k in IC:
            assert_same(got[k][i], case[k], abs_=1e-9, label=f"{case['id']} {k}")


def test_reference_cases_vectorised_equals_scalar(ref_cases):
    vec = all_stats(*(np.array([x[k] for x in ref_cases]) for k in "abcd"))
    for i, case in enumerate(ref_cases):
        one = all_stats(case["a"], case["b"], case["c"], case["d"])
        for k in vec:
            np.testing.assert_array_equal(one[k], vec[k][i:i + 1])


def test_zero_cell_b0_conventions_and_haldane(ref_cases):
    """Peer defect 7 (vigipy blanket +0.5): PRR stays 51 [33.04540, 78.70990]; ROR inf unless haldane."""
    case = next(x for x in ref_cases if x["id"] == "zero_cell_b0")
    a, b, c, d = case["a"], case["b"], case["c"], case["d"]
    p, lo, hi = fq.prr(a, b, c, d)
    assert (p[0], lo[0], hi[0]) == pytest.approx((51, 33.04540, 78.70990), rel=1e-6)
    r, rlo, rhi = fq.ror(a, b, c, d)
    assert r[0] == math.inf and math.isnan(rlo[0]) and rhi[0] == math.inf
    r, rlo, rhi = fq.ror(a, b, c, d, haldane=True)
    assert (r[0], rlo[0], rhi[0]) == pytest.approx((536.853659, 28.726687, 10032.895537), abs=1e-6)
    p2 = fq.prr(a, b, c, d, haldane=True)
    np.testing.assert_array_equal(np.array(p2), np.array((p, lo, hi)))  # PRR defined: untouched


def test_haldane_only_on_undefined_rows():
    a, b, c, d = np.array([10, 5, 3]), np.array([20, 0, 7]), np.array([200, 20, 0]), np.array([10000, 1000, 90])
    plain = np.array(fq.ror(a, b, c, d))
    corr = np.array(fq.ror(a, b, c, d, haldane=True))
    np.testing.assert_array_equal(corr[:, 0], plain[:, 0])
    assert np.all(np.isfinite(corr[:, 1:])) and not np.all(np.isfinite(plain[:, 1:]))
    pp, pc = np.array(fq.prr(a, b, c, d)), np.array(fq.prr(a, b, c, d, haldane=True))
    np.testing.assert_array_equal(pc[:, :2], pp[:, :2])  # c > 0 on rows 0 and 1
    assert pp[0, 2] == math.inf and np.isfinite(pc[0, 2])
    assert pc[0, 2] == pytest.approx((3.5 / 11) / (0.5 / 91), rel=1e-12)


@pytest.mark.parametrize("cells, prr, ror", [
    ((0, 10, 5, 100), (0.0, 0.0, math.nan), (0.0, 0.0, math.nan)),
    ((4, 10, 0, 100), (math.inf, math.nan, math.inf), (math.inf, math.nan, math.inf)),
    ((4, 0, 7, 100), None, (math.inf, math.nan, math.inf)),
])
def test_zero_cells_follow_ieee(cells, prr, ror):
    if prr is not None:
        for g, w in zip(fq.prr(*cells), prr):
            assert_same(g[0], w)
    for g, w in zip(fq.ror(*cells), ror):
        assert_same(g[0], w)


def test_chi2_empty_margin_nan_and_yates_zero():
    assert math.isnan(fq.chi2_pearson(0, 0, 5, 10)[0]) and math.isnan(fq.chi2_yates(0, 0, 5, 10)[0])
    assert math.isnan(fq.chi2_pearson(3, 0, 5, 0)[0])
    # |ad - bc| = |10*10 - 9*11| = 1 <= N/2 -> Yates 0, Pearson > 0
    assert fq.chi2_yates(10, 9, 11, 10)[0] == 0.0 and fq.chi2_pearson(10, 9, 11, 10)[0] > 0


def test_fisher_a0_is_one_and_midp():
    p, m = fq.fisher_one_sided(0, 5232, 3, 74905)
    assert p[0] == 1.0
    assert m[0] == pytest.approx(1 - 0.5 * stats.hypergeom.pmf(0, 80140, 5232, 3), rel=1e-12)


def test_pvda_ic_unit_values():
    """pvda's ic(obs, exp) values; the IC is on the log2 scale (a natural-log IC would differ)."""
    ic, lo, hi = fq.ic_noren(np.array([10, 1]), np.array([5.0, 1.0]))
    assert ic[0] == pytest.approx(0.932885804, abs=1e-9)
    assert lo[0] == pytest.approx(-0.09725664, abs=1e-8) and hi[0] == pytest.approx(1.68945678, abs=1e-8)
    assert ic[1] == 0.0
    assert lo[1] == pytest.approx(-3.79722727, abs=1e-8) and hi[1] == pytest.approx(1.63975752, abs=1e-8)


def test_confidence_level_is_a_parameter():
    assert fq.z_value(0.95) == pytest.approx(1.959963984540054, rel=1e-15)
    p95 = fq.prr(25, 1101, 62, 571385, confidence_level=0.95)
    p90 = fq.prr(25, 1101, 62, 571385, confidence_level=0.90)
    assert p90[1][0] > p95[1][0] and p90[2][0] < p95[2][0] and p90[0][0] == p95[0][0]
    i95, i90 = fq.ic_noren(25, 0.17), fq.ic_noren(25, 0.17, confidence_level=0.9)
    assert i90[1][0] > i95[1][0]


def test_overflow_margins_1e5_N_2e7():
    """Peer defect 10: n_drug·n_event = 1e10 overflows 32 bits; E must be the float64 value."""
    a = np.array([1000], dtype=np.int32)
    b = np.array([99_000], dtype=np.int32)
    c = np.array([99_000], dtype=np.int32)
    d = np.array([20_000_000 - 100_000 - 100_000 + 1000], dtype=np.int32)
    assert fq.expected(a, b, c, d)[0] == 500.0
    chi = fq.chi2_pearson(a, b, c, d)[0]
    n, ad_bc = 2e7, 1000.0 * d[0] - 99_000.0 * 99_000
    assert chi == pytest.approx(n * ad_bc ** 2 / (1e5 * (n - 1e5)) ** 2, rel=1e-12)
    assert fq.ic_noren(a, fq.expected(a, b, c, d))[0][0] == pytest.approx(math.log2(1000.5 / 500.5), rel=1e-14)


def test_bh_qvalues_match_statsmodels():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(3)
    p = np.concatenate([rng.random(200), rng.random(20) * 1e-4, [np.nan, 1.0, 1.0]])
    q = fq.bh_qvalues(p)
    ok = ~np.isnan(p)
    np.testing.assert_allclose(q[ok], multipletests(p[ok], method="fdr_bh")[1], rtol=1e-12)
    assert np.isnan(q[~ok]).all()


def test_hypergeom_pmf_large_population_accuracy():
    """Loader's method against exact rational arithmetic: ~1e-13, where log-gamma differences (and even scipy's
    boost pmf, ~5e-10 here) lose precision at N ~ 1e7."""
    from fractions import Fraction
    from math import comb

    cases = [(1614, 4640498, 85304, 71209), (328, 4640498, 85304, 3001), (92, 2506919, 9428, 12640),
             (0, 80140, 5232, 3), (5, 25_000_000, 100_000, 120_000), (3, 10, 4, 5)]
    k, N, K, n = (np.array(x) for x in zip(*cases))
    got = np.exp(fq.hypergeom_logpmf(k, N, K, n))
    exact = [float(Fraction(comb(Ki, ki) * comb(Ni - Ki, ni - ki), comb(Ni, ni))) for ki, Ni, Ki, ni in cases]
    np.testing.assert_allclose(got, exact, rtol=1e-12)
    assert np.exp(fq.hypergeom_logpmf(np.array([5]), np.array([10]), np.array([4]), np.array([5])))[0] == 0.0


cells = st.integers(min_value=1, max_value=5000)
big = st.integers(min_value=1, max_value=3_000_000)


@settings(max_examples=150, deadline=None)
@given(a=cells, b=cells, c=cells, d=big)
def test_random_tables_against_scipy_and_statsmodels(a, b, c, d):
    from statsmodels.stats.contingency_tables import Table2x2

    got = all_stats(a, b, c, d)
    rr = relative_risk(a, a + b, c, c + d)
    ci = rr.confidence_interval(0.95)
    assert got["prr"][0] == pytest.approx(rr.relative_risk, rel=1e-9)
    assert (got["prr_lo"][0], got["prr_hi"][0]) == pytest.approx((ci.low, ci.high), rel=1e-9)
    orr = odds_ratio([[a, b], [c, d]], kind="sample")
    oci = orr.confidence_interval(0.95)
    assert got["ror"][0] == pytest.approx(orr.statistic, rel=1e-9)
    assert (got["ror_lo"][0], got["ror_hi"][0]) == pytest.approx((oci.low, oci.high), rel=1e-9)
    t = Table2x2(np.array([[a, b], [c, d]]), shift_zeros=False)
    assert got["ror"][0] == pytest.approx(t.oddsratio, rel=1e-9)
    assert (got["ror_lo"][0], got["ror_hi"][0]) == pytest.approx(t.oddsratio_confint(0.05), rel=1e-9)
    assert got["prr"][0] == pytest.approx(t.riskratio, rel=1e-9)
    assert (got["prr_lo"][0], got["prr_hi"][0]) == pytest.approx(t.riskratio_confint(0.05), rel=1e-9)
    table = np.array([[a, b], [c, d]])
    assert got["chi2"][0] == pytest.approx(stats.chi2_contingency(table, correction=False)[0], rel=1e-8, abs=1e-9)
    assert got["chi2_yates"][0] == pytest.approx(stats.chi2_contingency(table, correction=True)[0], rel=1e-8,
                                                 abs=1e-9)
    N, K, n = a + b + c + d, a + b, a + c
    sf = stats.hypergeom.sf(a - 1, N, K, n)
    mid = stats.hypergeom.sf(a, N, K, n) + 0.5 * stats.hypergeom.pmf(a, N, K, n)
    assert got["fisher_p"][0] == pytest.approx(sf, rel=2e-9, abs=1e-300)
    assert got["fisher_midp"][0] == pytest.approx(mid, rel=2e-9, abs=1e-300)
    assert got["expected"][0] == pytest.approx(K * n / N, rel=1e-15)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60), st.integers(0, 60), st.integers(0, 60)),
                min_size=1, max_size=40))
def test_fisher_vectorised_small_tables_incl_zeros(rows):
    a, b, c, d = (np.array(x) for x in zip(*rows))
    keep = (a + b + c + d) > 0
    a, b, c, d = a[keep], b[keep], c[keep], d[keep]
    if a.size == 0:
        return
    p, m = fq.fisher_one_sided(a, b, c, d)
    N, K, n = a + b + c + d, a + b, a + c
    np.testing.assert_allclose(p, stats.hypergeom.sf(a - 1, N, K, n), rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(m, stats.hypergeom.sf(a, N, K, n) + 0.5 * stats.hypergeom.pmf(a, N, K, n),
                               rtol=1e-10, atol=1e-15)
