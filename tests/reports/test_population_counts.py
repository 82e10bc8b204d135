"""The report's counts run inside the population's connection: the background cells, the focus grid and both
stratified E equal plain-Python brute force over the curated rows, the background equals the Arrow path
(``stats.count_pairs`` on the rows pulled out), and the connection keeps only the population's relations."""

from __future__ import annotations

from collections import defaultdict

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tests.reports.curated_fixture import brute_counts


def _vary_strata(cur, seed: int = 3) -> dict:
    """Give the curated reports several sexes and age bands (some missing); return report_id -> stratum."""
    path = cur / "reports.parquet"
    t = pq.read_table(path)
    rng = np.random.default_rng(seed)
    sex = rng.choice(np.array(["F", "M", None], dtype=object), t.num_rows, p=[0.5, 0.4, 0.1])
    age = rng.choice(np.array(["<18", "18-44", "45-64", "65+", None], dtype=object), t.num_rows)
    for name, values in (("sex", sex), ("age_band", age)):
        i = t.schema.get_field_index(name)
        t = t.set_column(i, t.schema.field(i), pa.array(list(values), pa.string()))
    pq.write_table(t, path)
    years = t.column("receipt_year").to_pylist()
    return {r: (s, a, y) for r, s, a, y in zip(t.column("report_id").to_pylist(), sex, age, years)}


def _brute_background(rows, roles=("PS", "SS")):
    """{(ingredient, PT): (a, n_drug, n_event, n_total)} and the report sets, with Python sets."""
    pop = {rid for rid, _, ok in rows["reports"] if ok}
    drug_reports, pt_reports = defaultdict(set), defaultdict(set)
    for rid, ing, _, role, _ in rows["ingredients"]:
        if rid in pop and role in roles and ing is not None:
            drug_reports[ing].add(rid)
    for rid, pt, _, _ in rows["pts"]:
        if rid in pop:
            pt_reports[pt].add(rid)
    cells = {(d, e): (len(rd & re), len(rd), len(re), len(pop))
             for d, rd in drug_reports.items() for e, re in pt_reports.items() if rd & re}
    return cells, pop, drug_reports, pt_reports


def _brute_e(with_drug: set, with_event: set, levels: dict) -> float:
    """Σ_s n_drug,s · n_event,s / n_total,s over the population's strata (``levels``: stratum -> reports)."""
    return sum(len(with_drug & rs) * len(with_event & rs) / len(rs) for rs in levels.values())


def test_counts_in_the_population_connection_equal_brute_force(fresh, config):
    from pipeline.reports import population, scoring
    from pipeline.reports.params import resolve_params
    from pipeline.stats import count_pairs

    root, rows = fresh
    cur = root / "curated"
    stratum = _vary_strata(cur)
    params = resolve_params(config)
    con = duckdb.connect()
    try:
        pop = population.register_population(con, cur, config, params)
        own = sorted(r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall())
        bg = population.background(pop, params)
        strata = population.mgps_strata(pop, cur, config, params)
        prior = scoring.fit_prior(bg, strata, params["mgps_likelihood"])
        grid = population.focus_counts(pop, params, prior.strata)
        population.release_margins(prior.strata)
        arrow = count_pairs(con.sql(f"SELECT report_id, drug FROM {pop.background_exposures}").to_arrow_table(),
                            con.sql(f"SELECT report_id, event FROM {pop.events}").to_arrow_table(), n_total=pop.n_total)
        # the counting's own tables are gone; the population's are there, unchanged in number
        assert sorted(r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()) == own
        assert con.execute(f"SELECT count(*) FROM {pop.reports}").fetchone()[0] == pop.n_total
    finally:
        con.close()

    cells, pop_ids, drug_reports, pt_reports = _brute_background(rows)
    levels = defaultdict(set)
    for rid in pop_ids:
        levels[stratum[rid]].add(rid)
    assert len(levels) > 20 and prior.strata["n_strata"] == len(levels)

    # background: cells and stratified E
    back = prior.background
    got = {(r.drug, r.event): (r.a, r.n_drug, r.n_event, r.n_total) for r in back.itertuples(index=False)}
    assert got == cells
    assert bg.counts.equals(arrow)
    want_e = [_brute_e(drug_reports[d], pt_reports[e], levels) for d, e in zip(back["drug"], back["event"])]
    np.testing.assert_allclose(back["expected"].to_numpy(), want_e, rtol=1e-12, atol=0)

    # focus grid (PTs and PT groups, a = 0 included): cells and stratified E
    groups = {g.name: list(g.pts) for g in config.pt_groups}
    brute = brute_counts(rows, groups)
    focus_reports = defaultdict(set)
    for rid, _, sub, role, _ in rows["ingredients"]:
        if rid in pop_ids and role in ("PS", "SS") and sub is not None:
            focus_reports[sub].add(rid)
            focus_reports["ketamine_family"].add(rid)
    event_reports = {("pt", pt): reps for pt, reps in pt_reports.items()}
    for g, members in groups.items():
        keys = {m.lower() for m in members}
        event_reports[("group", g)] = {rid for rid, _, key, _ in rows["pts"] if rid in pop_ids and key in keys}
    assert len(grid) == len(brute)
    want_e = []
    for r in grid.itertuples(index=False):
        event = ("group", r.event[len(scoring.GROUP_PREFIX):]) if r.event.startswith(scoring.GROUP_PREFIX) \
            else ("pt", r.event)
        assert (r.a, r.n_drug, r.n_event, r.n_total) == brute[(r.drug, event)]
        want_e.append(_brute_e(focus_reports[r.drug], event_reports[event], levels))
    np.testing.assert_allclose(grid["expected"].to_numpy(), want_e, rtol=1e-12, atol=0)
    assert (np.asarray(want_e) > 0).sum() > 50
