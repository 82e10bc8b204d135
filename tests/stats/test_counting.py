"""Report-level counting: exact brute-force equality, reference datasets, openEBGM's hand-worked example."""

from __future__ import annotations

import itertools
import logging
from collections import defaultdict

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pipeline.errors import PipelineError
from pipeline.stats import count_pairs, count_rows, stratified_expected


def brute_force(exposures: pd.DataFrame, events: pd.DataFrame):
    drugs, evs = defaultdict(set), defaultdict(set)
    for r, dname in exposures.itertuples(index=False):
        drugs[r].add(dname)
    for r, e in events.itertuples(index=False):
        evs[r].add(e)
    universe = set(drugs) & set(evs)
    a, nd, ne = defaultdict(int), defaultdict(int), defaultdict(int)
    for r in universe:
        for dname in drugs[r]:
            nd[dname] += 1
        for e in evs[r]:
            ne[e] += 1
        for dname, e in itertools.product(drugs[r], evs[r]):
            a[dname, e] += 1
    return {k: (v, nd[k[0]], ne[k[1]], len(universe)) for k, v in a.items()}


def as_dict(table: pa.Table):
    df = table.to_pandas()
    return {(r.drug, r.event): (r.a, r.n_drug, r.n_event, r.n_total) for r in df.itertuples(index=False)}


def test_exact_counts_equal_brute_force():
    """Peer defect 4 (approximate distinct counts): cells are exact integers, int64."""
    rng = np.random.default_rng(11)
    n = 3000
    exp = pd.DataFrame({"report_id": rng.integers(0, 600, n), "drug": rng.choice(list("ABCDEFGH"), n)})
    ev = pd.DataFrame({"report_id": rng.integers(0, 650, n), "event": rng.choice([f"e{i}" for i in range(30)], n)})
    got = count_pairs(exp, ev)
    for c in ("a", "n_drug", "n_event", "n_total"):
        assert got.schema.field(c).type == pa.int64()
    assert as_dict(got) == brute_force(exp, ev)
    # one row per (drug, event)
    df = got.to_pandas()
    assert not df.duplicated(["drug", "event"]).any()


def test_duplicates_count_once_and_pt_group_once_per_report():
    exp = pd.DataFrame({"report_id": [1, 1, 1, 2, 3], "drug": ["k", "k", "k", "k", "x"]})
    # report 1 has two PTs of the same group: the group counts once
    ev = pd.DataFrame({"report_id": [1, 1, 2, 3, 3], "event": ["grp", "grp", "grp", "grp", "other"]})
    got = as_dict(count_pairs(exp, ev))
    assert got[("k", "grp")] == (2, 2, 3, 3)
    assert got[("x", "other")] == (1, 1, 1, 3)


def test_n_total_given_and_checked():
    exp = pd.DataFrame({"report_id": [1, 2], "drug": ["k", "k"]})
    ev = pd.DataFrame({"report_id": [1, 2, 3, 4], "event": ["e", "f", "e", "e"]})
    got = as_dict(count_pairs(exp, ev, n_total=10))
    assert got[("k", "e")] == (1, 2, 3, 10)
    with pytest.raises(PipelineError):
        count_pairs(exp, ev, n_total=2)
    with pytest.raises(PipelineError, match="missing column"):
        count_pairs(exp.rename(columns={"drug": "x"}), ev)


def test_caers_counts(caers, caers_counts):
    """openEBGM caers: 3,356 reports, 17,189 non-zero pairs; 239 duplicate rows counted once."""
    assert caers_counts.num_rows == 17_189
    assert set(caers_counts.column("n_total").to_pylist()) == {3356}
    assert caers.duplicated(["report_id", "drug", "event"]).sum() == 239
    dedup = caers.drop_duplicates(["report_id", "drug", "event"])
    again = count_rows(dedup[["report_id", "drug", "event"]])
    assert as_dict(again) == as_dict(count_rows(caers[["report_id", "drug", "event"]]))
    assert again.num_rows == 17_189
    # caers rows are full drug × event cross products per report, so both counting entries agree
    assert as_dict(again) == as_dict(caers_counts)
    assert caers_counts.to_pandas()["a"].sum() == len(dedup)


def test_pvda_counts(pvda):
    """pvda drug_event_df: 1,000 reports, 1,306 pairs; its 23 duplicate rows count once."""
    assert pvda.duplicated(["report_id", "drug", "event"]).sum() == 23
    got = count_rows(pvda)
    assert got.num_rows == 1306
    assert set(got.column("n_total").to_pylist()) == {1000}
    df = got.to_pandas()
    want = pvda.drop_duplicates(["report_id", "drug", "event"]).groupby(["drug", "event"]).size()
    assert df.set_index(["drug", "event"])["a"].sort_index().equals(want.sort_index().rename("a"))
    nd = pvda.groupby("drug")["report_id"].nunique()
    assert (df["n_drug"].to_numpy() == nd.loc[df["drug"]].to_numpy()).all()


DAT2 = pd.DataFrame({
    "report_id": range(1, 11),
    "drug": list("ABBBCAABBC"),
    "event": ["e1", "e2", "e2", "e3", "e3", "e2", "e3", "e3", "e3", "e1"],
    "strat1": list("MMMMMFFFMM"),
    "strat2": ["c1"] * 8 + ["c2"] * 2,
})

# openEBGM's hand-worked example: pair -> (N, E, RR, PRR, stratified E)
DAT2_WANT = {
    ("A", "e1"): (1, 0.6, 1.6667, 2.3333, 0.2),
    ("A", "e2"): (1, 0.9, 1.1111, 1.1667, 0.4 + 2 / 3),
    ("A", "e3"): (1, 1.5, 0.6667, 0.5833, 0.4 + 4 / 3),
    ("B", "e1"): (0, 1.0, 0, 0, 1.1),
    ("B", "e2"): (2, 1.5, 1.3333, 2, 1.2 + 1 / 3),
    ("B", "e3"): (3, 2.5, 1.2, 1.5, 1.7 + 2 / 3),
    ("C", "e1"): (1, 0.4, 2.5, 4, 0.7),
    ("C", "e2"): (0, 0.6, 0, 0, 0.4),
    ("C", "e3"): (1, 1.0, 1, 1, 0.9),
}


def test_openebgm_hand_worked_example(caplog):
    strata = DAT2[["report_id", "strat1", "strat2"]]
    with caplog.at_level(logging.WARNING):
        got = count_pairs(DAT2[["report_id", "drug"]], DAT2[["report_id", "event"]], strata=strata).to_pandas()
    assert "stratum" in caplog.text and "< 50" in caplog.text  # every stratum here is tiny
    got = got.set_index(["drug", "event"])
    nonzero = {k: v for k, v in DAT2_WANT.items() if v[0] > 0}
    assert set(got.index) == set(nonzero)
    for key, (n, e, rr, prr, e_strat) in nonzero.items():
        row = got.loc[key]
        assert row["a"] == n and row["n_total"] == 10
        assert row["expected_unstratified"] == pytest.approx(e, rel=1e-12)
        assert row["a"] / row["expected_unstratified"] == pytest.approx(rr, abs=1e-4)
        p = (n / row["n_drug"]) / ((row["n_event"] - n) / (10 - row["n_drug"]))
        assert p == pytest.approx(prr, abs=1e-4)
        assert row["expected"] == pytest.approx(e_strat, rel=1e-12)
    # stratified E for every pair, incl. the two never reported together
    pairs = pd.DataFrame(list(DAT2_WANT), columns=["drug", "event"])
    se = stratified_expected(DAT2[["report_id", "drug"]], DAT2[["report_id", "event"]], strata, pairs)
    for (dname, e), val in zip(zip(se["drug"], se["event"]), se["expected"]):
        assert val == pytest.approx(DAT2_WANT[dname, e][4], rel=1e-12)


def test_strata_metadata_warning_and_bad_strata():
    got = count_rows(DAT2[["report_id", "drug", "event"]], strata=DAT2, strata_cols=["strat1"])
    assert b"warnings" in got.schema.metadata
    bad = DAT2[["report_id", "strat1"]].copy()
    bad = pd.concat([bad, pd.DataFrame({"report_id": [1], "strat1": ["F"]})])
    with pytest.raises(PipelineError, match="more than one"):
        count_pairs(DAT2[["report_id", "drug"]], DAT2[["report_id", "event"]], strata=bad)


def test_stratified_expected_counts_against_brute_force():
    """E = Σ_s n_drug,s·n_event,s/n_total,s with a given population (reports without drug or event count in
    n_total,s), for pairs with and without co-reports: brute force with Python loops over strata and reports."""
    from pipeline.stats.counting import stratified_expected_counts

    rng = np.random.default_rng(11)
    reports = list(range(400))
    stratum = {r: f"{rng.choice(['F', 'M', 'U'])}|{rng.choice(['18-44', '45-64', '65+'])}|{rng.choice([2023, 2024])}"
               for r in reports}
    exp = [(r, f"D{rng.integers(0, 6)}") for r in reports for _ in range(rng.integers(0, 3))]
    evt = [(r, f"E{rng.integers(0, 8)}") for r in reports for _ in range(rng.integers(0, 3))]
    exposures = pd.DataFrame(exp, columns=["report_id", "drug"])
    events = pd.DataFrame(evt, columns=["report_id", "event"])
    strata = pd.DataFrame({"report_id": reports, "stratum": [stratum[r] for r in reports]})
    pairs = pd.DataFrame([(f"D{i}", f"E{j}") for i in range(7) for j in range(8)], columns=["drug", "event"])
    got, info = stratified_expected_counts(exposures, events, strata, pairs)
    want = []
    for d, e in pairs.itertuples(index=False):
        total = 0.0
        for s in set(stratum.values()):
            in_s = {r for r in reports if stratum[r] == s}
            nd = len({r for r, x in exp if x == d and r in in_s})
            ne = len({r for r, x in evt if x == e and r in in_s})
            total += nd * ne / len(in_s)
        want.append(total)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    assert info["n_strata"] == len(set(stratum.values())) and info["small_strata"] == info["n_strata"]
    # a single stratum gives the crude E
    one = strata.assign(stratum="all")
    crude, _ = stratified_expected_counts(exposures, events, one, pairs)
    nd = exposures.drop_duplicates().groupby("drug").size()
    ne = events.drop_duplicates().groupby("event").size()
    np.testing.assert_allclose(crude, [nd.get(d, 0) * ne.get(e, 0) / 400 for d, e in pairs.itertuples(index=False)],
                               rtol=1e-12)


def test_stratified_expected_counts_refuses_bad_strata():
    """A report with two strata, or an exposure of a report outside the strata table, is an error, not a wrong E."""
    from pipeline.stats.counting import stratified_expected_counts

    exposures = pd.DataFrame({"report_id": [1, 2, 3], "drug": ["D1", "D1", "D2"]})
    events = pd.DataFrame({"report_id": [1, 2, 3], "event": ["E1", "E2", "E1"]})
    pairs = pd.DataFrame({"drug": ["D1", "D2"], "event": ["E1", "E1"]})
    two = pd.DataFrame({"report_id": [1, 2, 3, 3], "stratum": ["a", "a", "b", "a"]})
    with pytest.raises(PipelineError, match="more than one stratum"):
        stratified_expected_counts(exposures, events, two, pairs)
    short = pd.DataFrame({"report_id": [1, 2], "stratum": ["a", "b"]})
    with pytest.raises(PipelineError, match="1 drug row"):
        stratified_expected_counts(exposures, events, short, pairs)


def test_stratified_expected_counts_a_missing_stratum_is_a_level():
    """A report whose stratum is missing is in its own stratum, not outside the population."""
    from pipeline.stats.counting import stratified_expected_counts

    exposures = pd.DataFrame({"report_id": [1, 2, 3, 4], "drug": ["D1", "D1", "D1", "D2"]})
    events = pd.DataFrame({"report_id": [1, 2, 3, 4], "event": ["E1", "E1", "E2", "E1"]})
    strata = pd.DataFrame({"report_id": [1, 2, 3, 4], "stratum": ["a", None, None, "a"]})
    got, info = stratified_expected_counts(exposures, events, strata, pd.DataFrame({"drug": ["D1"], "event": ["E1"]}))
    # stratum a: n_drug 1, n_event 2, n 2 -> 1; missing: n_drug 2, n_event 1, n 2 -> 1
    assert got.tolist() == [2.0] and info["n_strata"] == 2
