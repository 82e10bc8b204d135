"""Every analysis table: counts brute-forced from the fixture rows (tests/analyses/brute.py), statistics against
independent references (statsmodels Table2x2, scipy's gamma quantiles and Weibull fit, statsmodels' numerical
Hessian)."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from tests.analyses import brute

GP = ("group", "pt")


def _read(d, name):
    return pd.read_parquet(d / f"{name}.parquet")


def _key(r):
    return ("group", r["pt_group"]) if isinstance(r["pt_group"], str) else ("pt", r["pt"])


def test_files_and_columns_as_interface(analysed):
    _, _, d = analysed
    want = {
        "outcomes": ["substance", "pt_group", "pt", "a", "death", "life_threatening", "hospitalization", "disability",
                     "congenital_anomaly", "required_intervention", "other_serious", "serious"],
        "cases": ["substance", "characteristic", "category", "n_reports", "share"],
        "sensitivity": ["scenario", "substance", "pt_group", "pt", "a", "b", "c", "d", "n_total", "prr", "prr_lo",
                        "prr_hi", "ror", "ror_lo", "ror_hi", "ic", "ic025", "ic975"],
        "subgroups": ["subgroup_by", "subgroup", "substance", "pt_group", "pt", "a", "b", "c", "d", "n_total", "ror",
                      "ror_lo", "ror_hi", "ic", "ic025", "ic975"],
        "comparators": ["comparison", "population", "substance", "comparator", "pt_group", "pt", "a", "b", "c", "d",
                        "ror", "ror_lo", "ror_hi"],
        "onset": ["substance", "pt_group", "n_reports", "n_with_onset", "n_negative_excluded", "median_days",
                  "q1_days", "q3_days", "weibull_shape", "weibull_shape_lo", "weibull_shape_hi", "weibull_scale"],
    }
    import json

    m = json.loads((d / "manifest.json").read_text())
    for name, cols in want.items():
        df = _read(d, name)
        assert list(df.columns)[:len(cols)] == cols, name
        assert len(df) > 0, name
        assert m["counts"]["analyses"][name] == len(df)
        assert m["files"][f"{name}.parquet"]["sha256"]


def test_main_scenario_equals_signals(analysed):
    _, _, d = analysed
    sens = _read(d, "sensitivity")
    sig = _read(d, "signals")
    main = sens[sens["scenario"] == "main"]
    for c in ("substance", "pt_group", "pt"):
        sig[c] = sig[c].astype(object)
    m = main.merge(sig, on=["substance", "pt_group", "pt"], how="left", suffixes=("", "_sig"))
    assert m["a_sig"].notna().all()
    for c in ("a", "b", "c", "d", "n_total"):
        assert (m[c] == m[f"{c}_sig"]).all(), c
    for c in ("ror", "ror_lo", "prr_hi", "ic025"):
        assert np.allclose(m[c], m[f"{c}_sig"], rtol=1e-12, equal_nan=True), c


@pytest.mark.parametrize("scenario", ["main", "ps_only", "sole_suspect", "hcp_only", "duplicates_included",
                                      "indication_pts_excluded", "family_masked"])
def test_sensitivity_counts_brute_force(analysed, config, scenario):
    _, rows, d = analysed
    f = brute.Facts(rows, config)
    sens = _read(d, "sensitivity")
    part = sens[sens["scenario"] == scenario]
    assert len(part) > 0
    for r in part.to_dict("records"):
        kind, name = _key(r)
        assert (r["a"], r["b"], r["c"], r["d"]) == brute.sensitivity(f, scenario, r["substance"], kind, name), r
    if scenario != "main":  # each scenario changes something on this fixture
        main = sens[sens["scenario"] == "main"][["a", "b", "c", "d"]].to_numpy()
        assert (part[["a", "b", "c", "d"]].to_numpy() != main).any()


def test_statistics_against_statsmodels_and_scipy(analysed, config):
    from statsmodels.stats.contingency_tables import Table2x2

    _, _, d = analysed
    sens = _read(d, "sensitivity")
    ok = sens[(sens["a"] > 0) & (sens["b"] > 0) & (sens["c"] > 0) & (sens["d"] > 0)]
    assert len(ok) > 50
    for r in ok.head(300).to_dict("records"):
        t = Table2x2(np.array([[r["a"], r["b"]], [r["c"], r["d"]]], dtype=float))
        lo, hi = t.oddsratio_confint(alpha=0.05, method="normal")
        assert math.isclose(r["ror"], t.oddsratio, rel_tol=1e-10)
        assert math.isclose(r["ror_lo"], lo, rel_tol=1e-9) and math.isclose(r["ror_hi"], hi, rel_tol=1e-9)
        rlo, rhi = t.riskratio_confint(alpha=0.05, method="normal")
        assert math.isclose(r["prr"], t.riskratio, rel_tol=1e-10)
        assert math.isclose(r["prr_lo"], rlo, rel_tol=1e-9) and math.isclose(r["prr_hi"], rhi, rel_tol=1e-9)
        n = r["a"] + r["b"] + r["c"] + r["d"]
        e = (r["a"] + r["b"]) * (r["a"] + r["c"]) / n
        g = sps.gamma(r["a"] + 0.5, scale=1 / (e + 0.5))
        assert math.isclose(r["ic"], math.log2((r["a"] + 0.5) / (e + 0.5)), rel_tol=1e-12)
        assert math.isclose(r["ic025"], math.log2(g.ppf(0.025)), rel_tol=1e-8, abs_tol=1e-10)
        assert math.isclose(r["ic975"], math.log2(g.ppf(0.975)), rel_tol=1e-8, abs_tol=1e-10)


def test_subgroups_brute_force(analysed, config):
    _, rows, d = analysed
    f = brute.Facts(rows, config)
    sg = _read(d, "subgroups")
    assert set(sg["subgroup_by"]) == {"sex", "age_band", "reporter", "country"}
    assert sg["pt"].isna().all()
    for r in sg.to_dict("records"):
        got = (r["a"], r["b"], r["c"], r["d"])
        assert got == brute.subgroup(f, r["subgroup_by"], r["subgroup"], r["substance"], r["pt_group"]), r
    # the subgroups of one characteristic partition the population
    for by, part in sg.groupby("subgroup_by"):
        one = part[(part["substance"] == "esketamine") & (part["pt_group"] == "dissociation")]
        assert one["n_total"].sum() == len(f.pop), by


def test_comparators_brute_force(analysed, config):
    _, rows, d = analysed
    f = brute.Facts(rows, config)
    cp = _read(d, "comparators")
    comps = {c.name: c for c in config.analyses.comparators}
    assert set(cp["comparison"]) == set(comps) and set(cp["population"]) == {"all", "depression_cohort"}
    for r in cp.to_dict("records"):
        kind, name = _key(r)
        assert (r["a"], r["b"], r["c"], r["d"]) == brute.comparator(f, comps[r["comparison"]], r["population"],
                                                                    kind, name), r
        assert r["comparator"] == "+".join(comps[r["comparison"]].comparator)


def test_outcomes_brute_force(analysed, config):
    _, rows, d = analysed
    f = brute.Facts(rows, config)
    out = _read(d, "outcomes")
    sig = _read(d, "signals")
    assert (out["a"] >= 1).all()
    # every (substance, PT / group) with a >= 1 of signals.parquet is there, with the same a
    want = sig[sig["a"] >= 1]
    assert len(out) == len(want)
    for r in out.to_dict("records"):
        kind, name = _key(r)
        b = brute.outcomes(f, r["substance"], kind, name)
        assert {k: r[k] for k in b} == b, r


def test_cases_brute_force(analysed, config):
    _, rows, d = analysed
    f = brute.Facts(rows, config)
    cs = _read(d, "cases")
    assert set(cs["characteristic"]) == {"sex", "age_band", "reporter", "country", "receipt_year", "outcome",
                                         "route", "indication"}
    for s in ("ketamine", "esketamine", "ketamine_family"):
        x = f.exposed(s)
        part = cs[cs["substance"] == s]
        sex = part[part["characteristic"] == "sex"].set_index("category")["n_reports"].to_dict()
        want = {}
        for r in x:
            want[f.attrs[r]["sex"]] = want.get(f.attrs[r]["sex"], 0) + 1
        assert sex == want
        assert math.isclose(part[part["characteristic"] == "sex"]["share"].sum(), 1.0)
        codes = {}
        for rid, code in rows["outcomes"]:
            codes.setdefault(rid, set()).add(code)
        oc = part[part["characteristic"] == "outcome"].set_index("category")["n_reports"].to_dict()
        assert oc.get("death", 0) == sum(1 for r in x if "DE" in codes.get(r, ()))
        assert oc.get("none reported", 0) == sum(1 for r in x if not codes.get(r))
        routes = part[part["characteristic"] == "route"].set_index("category")["n_reports"].to_dict()
        for route in ("Nasal", "Oral"):
            assert routes.get(route, 0) == sum(1 for r in x if route in {dd[4] for dd in brute.own_drug_rows(f, s, r)})
        ind = part[part["characteristic"] == "indication"].set_index("category")["n_reports"].to_dict()
        for pt in ("Depression", "Anaesthesia"):
            n = sum(1 for r in x if pt in {i[2] for i in rows["indis"] if i[0] == r
                                           and i[1] in {dd[1] for dd in brute.own_drug_rows(f, s, r)}})
            assert ind.get(pt, 0) == n
        rep = part[part["characteristic"] == "reporter"].set_index("category")["n_reports"].to_dict()
        assert rep.get("physician (MD)", 0) == sum(1 for r in x if f.attrs[r]["occp_cod"] == "MD")
        assert rep.get("unknown", 0) == sum(1 for r in x if f.attrs[r]["occp_cod"] == "")


def test_onset_brute_force_and_weibull_against_scipy(analysed, config):
    from statsmodels.tools.numdiff import approx_hess

    _, rows, d = analysed
    f = brute.Facts(rows, config)
    on = _read(d, "onset")
    assert len(on) and (on["n_with_onset"] > 0).any()
    fitted = 0
    for r in on.to_dict("records"):
        a, kept, neg = brute.onset_days(f, r["substance"], r["pt_group"])
        assert (r["n_reports"], r["n_with_onset"], r["n_negative_excluded"]) == (a, len(kept), neg), r
        if kept:
            q = statistics.quantiles(kept, n=4, method="inclusive") if len(kept) > 1 else [kept[0]] * 3
            assert math.isclose(r["median_days"], statistics.median(kept))
            assert math.isclose(r["q1_days"], q[0]) and math.isclose(r["q3_days"], q[2])
        x = np.array(kept, dtype=float) + 1
        if len(kept) >= config.analyses.onset_min_reports and len(set(kept)) > 1:
            k, _, lam = sps.weibull_min.fit(x, floc=0, method="MLE")
            assert math.isclose(r["weibull_shape"], k, rel_tol=2e-3), (r, k)
            assert math.isclose(r["weibull_scale"], lam, rel_tol=2e-3)
            nll = lambda p: -np.sum(sps.weibull_min.logpdf(x, p[0], scale=p[1]))  # noqa: E731
            cov = np.linalg.inv(approx_hess(np.array([r["weibull_shape"], r["weibull_scale"]]), nll))
            se = math.sqrt(cov[0, 0]) / r["weibull_shape"]
            assert math.isclose(r["weibull_shape_lo"], r["weibull_shape"] * math.exp(-1.959963984540054 * se),
                                rel_tol=1e-3)
            assert math.isclose(r["weibull_shape_hi"], r["weibull_shape"] * math.exp(1.959963984540054 * se),
                                rel_tol=1e-3)
            fitted += 1
    assert fitted >= 3


def test_weibull_mle_on_a_known_sample():
    from pipeline.analyses.onset import weibull_mle

    x = sps.weibull_min.rvs(0.7, scale=30, size=4000, random_state=np.random.default_rng(2))
    k, lo, hi, lam = weibull_mle(x)
    rk, _, rlam = sps.weibull_min.fit(x, floc=0)
    assert math.isclose(k, rk, rel_tol=1e-3) and math.isclose(lam, rlam, rel_tol=1e-3)
    assert lo < 0.7 < hi and hi < 1  # early failure is read from the interval
    from pipeline.analyses.onset import reading

    assert reading(lo, hi).startswith("early failure")
    assert reading(1.2, 2.0).startswith("wear-out") and reading(0.8, 1.3).startswith("random")
    assert all(math.isnan(v) for v in weibull_mle([3.0, 3.0, 3.0]))


def test_by_use_brute_force(analysed, config):
    _, rows, d = analysed
    f = brute.Facts(rows, config)
    bu = _read(d, "by_use")
    assert set(bu["stratum_by"]) == {"indication_category", "route"}
    assert (bu["substance"] == "ketamine").all()
    assert {"anaesthesia", "other/none"} <= set(bu[bu["stratum_by"] == "indication_category"]["stratum"])
    for r in bu.to_dict("records"):
        kind, name = _key(r)
        assert (r["a"], r["b"], r["c"], r["d"]) == brute.by_use(f, r["stratum_by"], r["stratum"], kind, name), r
    # the categories partition ketamine's reports
    cat = bu[(bu["stratum_by"] == "indication_category") & (bu["pt_group"] == "dissociation")]
    assert (cat["a"] + cat["b"]).sum() == len(f.exposed("ketamine"))


def test_no_exposed_report_still_gives_the_main_rows(analysed, config, tmp_path):
    """A substance nobody reports (arketamine is absent from the fixture): every focus row has a = b = 0 and main
    still equals signals."""
    import shutil

    from pipeline.reports import build_report

    root, _, _ = analysed
    data = tmp_path / "data"
    shutil.copytree(root / "curated", data / "curated")
    res = build_report(data, config, substances=["arketamine"])
    from pathlib import Path

    d = Path(res["report_dir"])
    sens, sig = _read(d, "sensitivity"), _read(d, "signals")
    main = sens[sens["scenario"] == "main"]
    assert len(main) and (main["a"] == 0).all() and (main["b"] == 0).all()
    sig_focus = sig[sig["pt_group"].notna()]
    assert len(main[main["pt"].isna()]) == len(sig_focus)
    assert set(main["n_total"]) == set(sig["n_total"])
    assert len(_read(d, "outcomes")) == 0 and len(_read(d, "onset")) == 0


def test_shared_population_counts_are_per_population_and_dropped():
    """Inside the block, calls with the same population share its counts, calls with another population do not;
    the results equal unshared calls and no count table outlives the block."""
    import duckdb

    from pipeline.analyses.cells import count_cells, shared_population_counts

    con = duckdb.connect()
    con.execute("CREATE TABLE rpt AS SELECT range AS report_id, range % 3 = 0 AS hcp FROM range(60)")
    con.execute("CREATE TABLE ev AS SELECT report_id, CASE WHEN report_id % 4 = 0 THEN 'e1' ELSE 'e2' END AS event "
                "FROM rpt UNION ALL SELECT report_id, 'e1' FROM rpt WHERE report_id % 5 = 0")
    con.execute("CREATE TABLE x AS SELECT report_id, 'k' AS drug, '' AS stratum FROM rpt WHERE report_id % 7 = 0")
    x_hcp = "SELECT report_id, drug, stratum FROM x JOIN rpt USING (report_id) WHERE hcp"
    common = dict(events="SELECT * FROM ev", drugs=["k"], event_keys=["e1", "e2"])
    calls = [dict(pop="SELECT report_id FROM rpt", exposed="SELECT * FROM x", excluded="SELECT * FROM x", **common),
             dict(pop="SELECT report_id FROM rpt WHERE hcp", exposed=x_hcp, excluded=x_hcp, **common)]
    alone = [count_cells(con, **c) for c in calls]
    tables = lambda: {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}  # noqa: E731
    before = tables()
    with shared_population_counts(con):
        shared = [count_cells(con, **c) for c in calls + calls]
        assert len(tables() - before) == 4  # two populations, two count tables each
    assert tables() == before
    for got, want in zip(shared, alone + alone):
        pd.testing.assert_frame_equal(got, want)
    # the second population is a third of the first: its cells differ
    assert alone[0]["n_total"].iloc[0] == 60 and alone[1]["n_total"].iloc[0] == 20


def test_onset_is_the_same_whatever_order_the_rows_come_in(analysed, config):
    """The onset days come sorted, so the Weibull fit sums them in one order: a report rebuilt from the same data
    has the same bits (DuckDB's parallel joins return rows in any order)."""
    from pipeline import duck
    from pipeline.analyses.base import prepare
    from pipeline.analyses.onset import onset, onset_days
    from pipeline.reports.params import resolve_params
    from pipeline.reports.scoring import GROUP_PREFIX

    root, _, _ = analysed
    con = duck.open_connection()
    try:
        base = prepare(con, root / "curated", config, resolve_params(config), GROUP_PREFIX)
        days = onset_days(con, base)
        assert len(days) > 10
        key = days[["drug", "event", "report_id"]]
        assert key.equals(key.sort_values(["drug", "event", "report_id"]).reset_index(drop=True))
        first, kept = onset(con, base, config)
        for order in ("report_id DESC", "hash(report_id)"):
            con.execute(f"CREATE OR REPLACE TEMP TABLE an_x AS SELECT * FROM an_x ORDER BY {order}")
            again, kept_again = onset(con, base, config)
            pd.testing.assert_frame_equal(again, first, check_exact=True)
            assert all(np.array_equal(kept[k], kept_again[k]) for k in kept)
        assert first["weibull_shape"].notna().any()
    finally:
        duck.close(con)
