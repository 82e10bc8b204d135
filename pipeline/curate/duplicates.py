"""Cross-case duplicate **flags** . Nothing is deleted here.

Rules (each switchable in ``[duplicates]``); a blank field never matches a blank field - a report with a blank
key field simply does not take part in that rule:

* ``aeolus_key`` (Banda et al. 2016): identical event_dt, age (years, after unit conversion), sex (M/F),
  reporter_country, sorted set of all ingredients, sorted set of PT keys.
* ``mfr_num``: identical (mfr_num, mfr_sndr) on different caseids, when sex does not contradict (equal when both
  known) and age does not contradict (within ``mfr_age_tolerance_years`` when both known); a pair shared by more
  than ``mfr_max_group_size`` cases is a filler value and ignored.
* ``relaxed``: same full (day-precision) event date, sex, country; ages within ``relaxed_age_tolerance_years``;
  suspect (PS/SS/I) ingredient sets of at least ``relaxed_min_suspects`` with Jaccard >= ``relaxed_min_jaccard``;
  at least one PT in common. Groups e.g. one French patient reported by three manufacturers with different
  mfr_num and slightly different PT sets (tests/test_curate.py::test_french_triple_*).

Matches are edges; connected components are the groups. ``dup_group_id`` = the smallest report_id of the group,
``dup_rule`` = the rules that linked it ('+'-joined), ``is_dup_kept`` = true for one member - one with a drug and a PT if
any, then the latest fda_dt, highest caseversion, highest report_id - and for every report outside a group.
"""

from __future__ import annotations

import time

import duckdb
import numpy as np
import pyarrow as pa
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from pipeline.settings import Config

DUP_SCHEMA = pa.schema([("report_id", pa.int64()), ("dup_group_id", pa.int64()), ("dup_rule", pa.string()),
                        ("is_dup_kept", pa.bool_())])

SUSPECT_ROLES = ("PS", "SS", "I")
_KNOWN_COUNTRY = "reporter_country <> '' AND upper(reporter_country) <> 'COUNTRY NOT SPECIFIED'"


def _edges(con, sql: str) -> np.ndarray:
    arr = con.execute(sql).fetchnumpy()
    if not len(arr["a"]):
        return np.empty((0, 2), dtype=np.int64)
    return np.column_stack([arr["a"].astype(np.int64), arr["b"].astype(np.int64)])


def flag_duplicates(con: duckdb.DuckDBPyConnection, config: Config) -> dict:
    """Create temp table ``dup_flags`` (only reports in a group). Needs ``rep``, ``report_ingredients``,
    ``report_pts``."""
    pol = config.duplicates
    rule_edges: dict[str, np.ndarray] = {}
    t0 = time.perf_counter()
    secs: dict[str, float] = {}

    def lap(name):
        nonlocal t0
        secs[name] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
    if pol.aeolus_key:
        # block on an order-independent hash of the ingredient and PT sets, then verify candidates on exact text
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE dup_a AS
            WITH e AS (SELECT report_id, event_dt, round(age_years, 3) AS age, sex,
                              upper(reporter_country) AS country FROM rep
                       WHERE event_dt <> '' AND age_years IS NOT NULL AND sex IN ('M', 'F') AND {_KNOWN_COUNTRY}
                       -- only reports sharing their demographics with another need the set hashes
                       QUALIFY count(*) OVER (PARTITION BY event_dt, round(age_years, 3), sex,
                                              upper(reporter_country)) > 1),
                 ing AS (SELECT report_id, bit_xor(h) AS hi, count(*) AS ni
                         FROM (SELECT DISTINCT report_id, hash(ingredient) AS h FROM report_ingredients
                               SEMI JOIN e USING (report_id)) GROUP BY report_id),
                 pts AS (SELECT report_id, bit_xor(hash(pt_key)) AS hp, count(*) AS np
                         FROM report_pts SEMI JOIN e USING (report_id) GROUP BY report_id)
            SELECT e.* FROM e JOIN ing USING (report_id) JOIN pts USING (report_id)
            QUALIFY count(*) OVER (PARTITION BY event_dt, age, sex, country, hi, ni, hp, np) > 1""")
        rule_edges["aeolus_key"] = _edges(con, """
            WITH i AS (SELECT report_id, string_agg(ingredient, '|' ORDER BY ingredient) AS s
                       FROM (SELECT DISTINCT report_id, ingredient FROM report_ingredients
                             WHERE report_id IN (SELECT report_id FROM dup_a)) GROUP BY report_id),
                 p AS (SELECT report_id, string_agg(pt_key, '|' ORDER BY pt_key) AS s FROM report_pts
                       WHERE report_id IN (SELECT report_id FROM dup_a) GROUP BY report_id)
            SELECT a, b FROM (
                SELECT d.report_id AS a, min(d.report_id) OVER w AS b, count(*) OVER w AS n
                FROM dup_a d JOIN i USING (report_id) JOIN p USING (report_id)
                WINDOW w AS (PARTITION BY d.event_dt, d.age, d.sex, d.country, i.s, p.s))
            WHERE n > 1 AND a <> b""")
        con.execute("DROP TABLE dup_a")
        lap("aeolus_key")
    if pol.mfr_num:
        tol = float(pol.mfr_age_tolerance_years)
        rule_edges["mfr_num"] = _edges(con, f"""
            WITH m AS (SELECT report_id, mfr_num, mfr_sndr, sex, age_years FROM rep
                       WHERE mfr_num <> '' AND mfr_sndr <> ''),
                 ok AS (SELECT mfr_num, mfr_sndr FROM m GROUP BY ALL
                        HAVING count(*) BETWEEN 2 AND {int(pol.mfr_max_group_size)})
            SELECT x.report_id AS a, y.report_id AS b
            FROM m x JOIN ok USING (mfr_num, mfr_sndr)
            JOIN m y ON y.mfr_num = x.mfr_num AND y.mfr_sndr = x.mfr_sndr AND y.report_id > x.report_id
            WHERE NOT (x.sex IN ('M', 'F') AND y.sex IN ('M', 'F') AND x.sex <> y.sex)
              AND NOT (x.age_years IS NOT NULL AND y.age_years IS NOT NULL
                       AND abs(x.age_years - y.age_years) > {tol})""")
        lap("mfr_num")
    if pol.relaxed:
        tol = float(pol.relaxed_age_tolerance_years)
        roles = ", ".join(f"'{r}'" for r in SUSPECT_ROLES)
        # candidate pairs from demographics alone (cheap), ingredient/PT lists only for the candidates
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE dup_r AS
            -- count(*) over (report, ingredient, role) rows bounds the distinct suspect count from above: a safe
            -- pre-filter on integers; the exact count is checked on the candidates below
            WITH s AS (SELECT report_id FROM report_ingredients WHERE role_cod IN ({roles})
                       GROUP BY report_id HAVING count(*) >= {int(pol.relaxed_min_suspects)})
            SELECT r.report_id, r.event_dt, r.sex, upper(r.reporter_country) AS country, r.age_years,
                   floor(r.age_years / {max(tol, 1e-9)})::BIGINT AS age_bucket
            FROM rep r SEMI JOIN s USING (report_id)
            WHERE regexp_full_match(r.event_dt, '[0-9]{{8}}') AND r.sex IN ('M', 'F') AND {_KNOWN_COUNTRY}
              AND r.age_years IS NOT NULL""")
        parts = [f"""
                SELECT x.report_id AS a, y.report_id AS b FROM dup_r x JOIN dup_r y
                  ON y.event_dt = x.event_dt AND y.sex = x.sex AND y.country = x.country
                 AND y.age_bucket = x.age_bucket + ({off})
                WHERE y.report_id > x.report_id AND abs(x.age_years - y.age_years) <= {tol}"""
                 for off in (-1, 0, 1)]  # ages within tol lie in the same or a neighbouring bucket
        con.execute("CREATE OR REPLACE TEMP TABLE dup_rp AS " + " UNION ALL ".join(parts))
        rule_edges["relaxed"] = _edges(con, f"""
            WITH ids AS (SELECT a AS report_id FROM dup_rp UNION SELECT b FROM dup_rp),
                 s AS (SELECT report_id, list(DISTINCT ingredient) AS sus FROM report_ingredients
                       WHERE role_cod IN ({roles}) AND report_id IN (SELECT report_id FROM ids) GROUP BY report_id),
                 p AS (SELECT report_id, list(pt_key) AS pts FROM report_pts
                       WHERE report_id IN (SELECT report_id FROM ids) GROUP BY report_id)
            SELECT a, b FROM dup_rp
            JOIN s sa ON sa.report_id = a JOIN s sb ON sb.report_id = b
            JOIN p pa ON pa.report_id = a JOIN p pb ON pb.report_id = b
            WHERE len(sa.sus) >= {int(pol.relaxed_min_suspects)} AND len(sb.sus) >= {int(pol.relaxed_min_suspects)}
              AND len(list_intersect(pa.pts, pb.pts)) > 0
              AND len(list_intersect(sa.sus, sb.sus))
                  / (len(sa.sus) + len(sb.sus) - len(list_intersect(sa.sus, sb.sus)))
                  >= {float(pol.relaxed_min_jaccard)}""")
        summary_pairs = con.execute("SELECT count(*) FROM dup_rp").fetchall()[0][0]
        con.execute("DROP TABLE dup_r")
        con.execute("DROP TABLE dup_rp")
        lap("relaxed")
    else:
        summary_pairs = 0

    summary = {"edges": {k: int(len(v)) for k, v in rule_edges.items()}, "relaxed_candidate_pairs": summary_pairs,
               "seconds": secs}
    all_edges = [(e, rule) for rule, e in rule_edges.items() if len(e)]
    if not all_edges:
        con.register("_dup_empty", pa.table({f.name: pa.array([], f.type) for f in DUP_SCHEMA}))
        con.execute("CREATE OR REPLACE TEMP TABLE dup_flags AS SELECT * FROM _dup_empty")
        summary.update(groups=0, reports_in_groups=0, largest_group=0)
        return summary

    edges = np.concatenate([e for e, _ in all_edges])
    rule_idx = np.concatenate([np.full(len(e), i) for i, (e, _) in enumerate(all_edges)])
    nodes, inv = np.unique(edges.ravel(), return_inverse=True)
    inv = inv.reshape(-1, 2)
    n = len(nodes)
    graph = coo_matrix((np.ones(len(inv)), (inv[:, 0], inv[:, 1])), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    # group id = smallest report_id of the component
    root = np.full(comp.max() + 1, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(root, comp, nodes)
    # rules per component, as a bit mask over all_edges order
    masks = np.zeros(comp.max() + 1, dtype=np.int64)
    np.bitwise_or.at(masks, comp[inv[:, 0]], (1 << rule_idx).astype(np.int64))
    names = [rule for _, rule in all_edges]
    mask_text = {m: "+".join(names[i] for i in range(len(names)) if m >> i & 1) for m in np.unique(masks)}
    con.register("_dup_members", pa.table({
        "report_id": pa.array(nodes, pa.int64()),
        "dup_group_id": pa.array(root[comp], pa.int64()),
        "dup_rule": pa.array([mask_text[m] for m in masks[comp]], pa.string()),
    }))
    con.execute("""
        CREATE OR REPLACE TEMP TABLE dup_flags AS
        SELECT m.report_id, m.dup_group_id, m.dup_rule,
               row_number() OVER (PARTITION BY m.dup_group_id
                                  ORDER BY (m.report_id IN (SELECT report_id FROM report_ingredients)
                                            AND m.report_id IN (SELECT report_id FROM report_pts)) DESC,
                                           r.fda_dt DESC NULLS LAST, r.caseversion DESC, m.report_id DESC) = 1
                   AS is_dup_kept
        FROM _dup_members m JOIN rep r USING (report_id)""")
    con.unregister("_dup_members")
    sizes = np.bincount(comp)
    summary.update(groups=int(len(sizes)), reports_in_groups=int(n), largest_group=int(sizes.max()),
                   by_rule=dict(con.execute("SELECT dup_rule, count(*) FROM dup_flags GROUP BY 1 ORDER BY 1")
                                .fetchall()))
    return summary
