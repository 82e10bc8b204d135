"""Counting inside a caller's connection (``count_pairs_in``, ``stratified_expected_counts_in``): the same cells as
plain-Python brute force and as the Arrow entry points, on tables, views and statements, without touching the
caller's relations."""

from __future__ import annotations

from collections import defaultdict

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pipeline.errors import PipelineError
from pipeline.stats import count_pairs, count_pairs_in, stratified_expected_counts, stratified_expected_counts_in
from pipeline.stats.counting_sql import StratumMargins
from tests.stats.test_counting import as_dict, brute_force

# relation names the counting used for its own tables before it ran in a caller's connection
CALLER_TABLES = ("e", "v", "p", "r", "nd", "ne", "st", "s_all", "ns", "nds", "nes")


def _rows(seed: int):
    """Random report-level rows with duplicates, null names, reports without events and events without drugs."""
    rng = np.random.default_rng(seed)
    n = 2500
    exp = pd.DataFrame({"report_id": rng.integers(0, 500, n), "drug": rng.choice(list("ABCDEFG"), n)})
    exp.loc[rng.random(n) < 0.02, "drug"] = None
    pt = pd.DataFrame({"report_id": rng.integers(0, 540, n), "event": rng.choice([f"e{i}" for i in range(25)], n)})
    grp = pd.DataFrame({"report_id": rng.integers(0, 540, n // 4), "event": rng.choice(["G:x", "G:y"], n // 4)})
    return exp, pt, grp


def _caller(exp, pt, grp) -> duckdb.DuckDBPyConnection:
    """A connection holding the rows as the report's population does, beside tables named like the counting's own."""
    con = duckdb.connect()
    con.register("exp_df", exp)
    con.register("pt_df", pt)
    con.register("grp_df", grp)
    con.execute("CREATE TEMP TABLE my_exp AS SELECT * FROM exp_df")
    con.execute("CREATE TEMP TABLE my_pt AS SELECT * FROM pt_df")
    con.execute("CREATE VIEW my_grp AS SELECT * FROM grp_df")
    for t in CALLER_TABLES:
        con.execute(f"CREATE TEMP TABLE {t} AS SELECT 1 AS report_id, 'junk' AS drug, 'junk' AS event, 'x' AS s")
    return con


def _relations(con) -> list[str]:
    return sorted(r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() UNION ALL "
                                            "SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall())


def _brute_given_total(exp, ev, n_total):
    """Brute force with the universe given: margins over every report of the rows (not only those with both)."""
    drugs, evs = defaultdict(set), defaultdict(set)
    for r, d in exp.dropna().itertuples(index=False):
        drugs[d].add(r)
    for r, e in ev.dropna().itertuples(index=False):
        evs[e].add(r)
    return {(d, e): (len(rd & re), len(rd), len(re), n_total)
            for d, rd in drugs.items() for e, re in evs.items() if rd & re}


def test_count_pairs_in_equals_brute_force_and_the_arrow_path():
    exp, pt, grp = _rows(3)
    events = pd.concat([pt, grp], ignore_index=True)
    con = _caller(exp, pt, grp)
    before = _relations(con)
    try:
        # the universe from the data: tables and a UNION ALL statement as the report's all_events()
        got = count_pairs_in(con, "my_exp", "SELECT report_id, event FROM my_pt UNION ALL "
                                            "SELECT report_id, event FROM my_grp")
        assert as_dict(got) == brute_force(exp.dropna(), events)
        assert got.equals(count_pairs(exp, events))
        # the universe given (the report's population of 600 reports)
        given = count_pairs_in(con, "SELECT report_id, drug FROM my_exp", "my_pt", n_total=600)
        assert as_dict(given) == _brute_given_total(exp, pt, 600)
        assert given.equals(count_pairs(exp, pt, n_total=600))
        assert given.column_names == ["drug", "event", "a", "n_drug", "n_event", "n_total"]
        assert all(given.schema.field(c).type == pa.int64() for c in ("a", "n_drug", "n_event", "n_total"))
        # a failing call leaves the connection as it found it too
        with pytest.raises(PipelineError, match="n_total"):
            count_pairs_in(con, "my_exp", "my_pt", n_total=10)
        # the caller's relations are neither read nor dropped: same names, and its "e" still holds its one row
        assert _relations(con) == before
        assert con.execute("SELECT count(*), min(drug) FROM e").fetchall() == [(1, "junk")]
    finally:
        con.close()


def test_distinct_relations_are_read_as_they_are_with_the_same_counts():
    exp, pt, _ = _rows(11)
    con = _caller(exp, pt, pt)
    con.execute("CREATE TEMP TABLE d_exp AS SELECT DISTINCT report_id, drug FROM my_exp WHERE drug IS NOT NULL")
    con.execute("CREATE TEMP TABLE d_pt AS SELECT DISTINCT report_id, event FROM my_pt")
    before = _relations(con)
    try:
        got = count_pairs_in(con, "d_exp", "SELECT report_id, event FROM d_pt", n_total=600, distinct=True)
        assert as_dict(got) == _brute_given_total(exp, pt, 600)
        assert got.equals(count_pairs_in(con, "my_exp", "my_pt", n_total=600))
        assert _relations(con) == before  # its views are gone too
    finally:
        con.close()


def test_count_pairs_in_with_rows_and_strata_equals_the_arrow_path():
    exp, pt, _ = _rows(5)
    rows = exp.dropna().merge(pt, on="report_id").drop_duplicates().head(1500)
    rng = np.random.default_rng(5)
    strata = pd.DataFrame({"report_id": np.arange(600), "sex": rng.choice(["F", "M", None], 600)})
    con = _caller(exp, pt, pt)
    con.register("rows_df", rows)
    con.register("strata_df", strata)
    try:
        got = count_pairs_in(con, None, None, rows="rows_df", strata="strata_df", strata_cols=("sex",))
        want = count_pairs(None, None, rows=rows, strata=strata, strata_cols=["sex"])
        assert got.select(range(6)).equals(want.select(range(6))) and got.schema.metadata == want.schema.metadata
        # E is a parallel floating-point sum in DuckDB: equal up to its order
        for c in ("expected", "expected_unstratified"):
            np.testing.assert_allclose(got.column(c).to_numpy(), want.column(c).to_numpy(), rtol=1e-12)
        assert got.num_rows == rows.groupby(["drug", "event"]).ngroups
    finally:
        con.close()


def _brute_stratified(exp, ev, stratum: dict, pairs):
    """E = Σ_s n_drug,s · n_event,s / n_total,s with Python sets, over every report of ``stratum``."""
    levels = defaultdict(set)
    for r, s in stratum.items():
        levels[s].add(r)
    out = []
    for d, e in pairs.itertuples(index=False):
        with_d = {r for r, x in exp.itertuples(index=False) if x == d}
        with_e = {r for r, x in ev.itertuples(index=False) if x == e}
        out.append(sum(len(with_d & rs) * len(with_e & rs) / len(rs) for rs in levels.values()))
    return np.array(out)


def test_stratified_expected_counts_in_equals_brute_force_whatever_the_chunk():
    exp, pt, grp = _rows(9)
    exp = exp.dropna()
    events = pd.concat([pt, grp], ignore_index=True)
    rng = np.random.default_rng(9)
    reports = range(600)
    stratum = {r: f"{rng.choice(['F', 'M'])}|{rng.choice(['<18', '18-64', '65+'])}" for r in reports}
    stratum[0] = None  # a missing stratum is a level of its own
    strata_df = pd.DataFrame({"report_id": list(reports), "stratum": [stratum[r] for r in reports]})
    con = _caller(exp, pt, grp)
    con.register("strata_df", strata_df)
    before = _relations(con)
    pairs = pd.DataFrame([(d, e) for d in "ZABCDEFG" for e in ["e25", "G:x", "G:y"] + [f"e{i}" for i in range(25)]],
                         columns=["drug", "event"])  # Z and e25: never named, E = 0
    ev_sql = "SELECT report_id, event FROM my_pt UNION ALL SELECT report_id, event FROM my_grp"
    try:
        want = _brute_stratified(exp, events, {r: str(s) for r, s in stratum.items()}, pairs)
        got, info = stratified_expected_counts_in(con, "my_exp", ev_sql, "strata_df", pairs)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
        assert (want > 0).sum() > 100 and (want == 0).sum() > 0
        assert info["n_strata"] == len(set(stratum.values()))
        for chunk in (1, 7, 10_000):
            again, _ = stratified_expected_counts_in(con, "my_exp", ev_sql, "strata_df", pairs, chunk=chunk)
            assert np.array_equal(again, got)
        arrow, arrow_info = stratified_expected_counts(exp, events, strata_df, pairs)
        assert np.array_equal(arrow, got) and arrow_info == info
        assert _relations(con) == before
    finally:
        con.close()


def test_stratum_margins_are_counted_once_and_shared_by_pair_sets():
    exp, pt, grp = _rows(13)
    exp = exp.dropna()
    rng = np.random.default_rng(13)
    stratum = {r: f"{rng.choice(['F', 'M'])}|{rng.choice(['<18', '65+'])}" for r in range(600)}
    strata_df = pd.DataFrame({"report_id": list(stratum), "stratum": list(stratum.values())})
    con = _caller(exp, pt, grp)
    con.register("strata_df", strata_df)
    con.execute("CREATE TEMP TABLE d_exp AS SELECT DISTINCT report_id, drug FROM my_exp")
    con.execute("CREATE TEMP TABLE d_pt AS SELECT DISTINCT report_id, event FROM my_pt")
    con.execute("CREATE TEMP TABLE d_grp AS SELECT DISTINCT report_id, event FROM my_grp")
    before = _relations(con)
    background = pd.DataFrame([(d, f"e{i}") for d in "ABC" for i in range(25)], columns=["drug", "event"])
    focus = pd.DataFrame([(d, e) for d in "DZ" for e in ["G:x", "G:y", "G:none", "e3", "e99"]],
                         columns=["drug", "event"])
    try:
        with StratumMargins(con, "strata_df", distinct=True) as m:
            got_b, info = m.expected("d_exp", "d_pt", background)
            pt_margins = m.margins("d_pt", "event")
            # the focus grid's events: the same PT relation (counted once, reused) and the group relation
            got_f, _ = m.expected("d_exp", ("d_pt", "d_grp"), focus)
            assert m.margins("d_pt", "event")[1] is pt_margins[1]
            with pytest.raises(PipelineError, match="share key"):
                m.expected("d_exp", ("d_pt", "d_pt"), focus)
        assert _relations(con) == before
        events = pd.concat([pt, grp], ignore_index=True)
        np.testing.assert_allclose(got_b, _brute_stratified(exp, pt, stratum, background), rtol=1e-12, atol=0)
        want_f = _brute_stratified(exp, events, stratum, focus)
        np.testing.assert_allclose(got_f, want_f, rtol=1e-12, atol=0)
        assert (want_f == 0).sum() >= 6 and (want_f > 0).sum() >= 3  # Z, G:none and e99 were never reported
        assert info["n_strata"] == 4
    finally:
        con.close()
