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

* ``linkage`` (``[duplicates.linkage]``): probabilistic record linkage (:mod:`pipeline.curate.linkage`); pairs with
  match probability >= ``threshold`` are edges too. Analyst decisions (``review_file``) add (``review``) or remove
  edges.

Matches are edges; connected components are the groups. ``dup_group_id`` = the smallest report_id of the group,
``dup_rule`` = the rules that linked it ('+'-joined), ``dup_score`` = the highest linkage probability to another
member, ``is_dup_kept`` = true for one member - one with a drug and a PT if
any, then the latest fda_dt, highest caseversion, highest report_id - and for every report outside a group.
"""

from __future__ import annotations

import time

import duckdb
import numpy as np
import pyarrow as pa

from pipeline.curate import linkage
from pipeline.curate.linkage import cluster, review
from pipeline.settings import Config

SUSPECT_ROLES = ("PS", "SS", "I")
_KNOWN_COUNTRY = "reporter_country <> '' AND upper(reporter_country) <> 'COUNTRY NOT SPECIFIED'"


def _edges(con, sql: str) -> np.ndarray:
    arr = con.execute(sql).fetchnumpy()
    if not len(arr["a"]):
        return np.empty((0, 2), dtype=np.int64)
    return np.column_stack([arr["a"].astype(np.int64), arr["b"].astype(np.int64)])


def flag_duplicates(con: duckdb.DuckDBPyConnection, config: Config) -> dict:
    """Create temp tables ``dup_flags`` (reports in a group: ``report_id, dup_group_id, dup_rule, dup_score,
    is_dup_kept``), ``dup_flags_rules`` (the same from the rule matches alone, for the funnel) and ``dup_review``
    (borderline linkage pairs). Needs ``rep``, ``report_ingredients``, ``report_pts``."""
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
            WITH e0 AS (SELECT report_id, event_dt, round(age_years, 3) AS age, sex,
                               upper(reporter_country) AS country FROM rep
                        WHERE event_dt <> '' AND age_years IS NOT NULL AND sex IN ('M', 'F') AND {_KNOWN_COUNTRY}),
                 -- only reports sharing their demographics with another need the set hashes (a grouped count
                 -- and a semi join: cheaper than a window over every report)
                 e AS (SELECT * FROM e0 SEMI JOIN (SELECT event_dt, age, sex, country FROM e0 GROUP BY ALL
                                                   HAVING count(*) > 1) USING (event_dt, age, sex, country)),
                 ing AS (SELECT report_id, bit_xor(h) AS hi, count(*) AS ni
                         FROM (SELECT DISTINCT report_id, hash(ingredient) AS h FROM report_ingredients
                               SEMI JOIN e USING (report_id)) GROUP BY report_id),
                 pts AS (SELECT report_id, bit_xor(hash(pt_key)) AS hp, count(*) AS np
                         FROM report_pts SEMI JOIN e USING (report_id) GROUP BY report_id),
                 k AS (SELECT e.*, hi, ni, hp, np FROM e JOIN ing USING (report_id) JOIN pts USING (report_id))
            SELECT event_dt, age, sex, country, report_id FROM k SEMI JOIN (
                SELECT event_dt, age, sex, country, hi, ni, hp, np FROM k GROUP BY ALL HAVING count(*) > 1)
                USING (event_dt, age, sex, country, hi, ni, hp, np)""")
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
    lk = pol.linkage
    same, different = review.read_decisions(config)
    rule_sets = [(rule, review.drop_pairs(e, different)) for rule, e in rule_edges.items()]
    edge_sets = list(rule_sets)
    if lk.enabled:
        all_rule = np.concatenate([e for _, e in rule_sets]) if rule_sets else np.empty((0, 2), np.int64)
        linked, summary["linkage"] = linkage.link(con, lk, all_rule)
        edge_sets.append(("linkage", review.drop_pairs(linked, different)))
        if "skipped" not in summary["linkage"]:
            review.borderline(con, linkage.threshold_weight(lk.threshold), lk.review_margin_bits, lk.review_max_pairs)
        else:
            review.empty_review(con)
        lap("linkage")
    else:
        summary["linkage"] = {"skipped": "duplicates.linkage.enabled = false"}
        con.execute("CREATE OR REPLACE TEMP TABLE lk_scored (a BIGINT, b BIGINT, w DOUBLE, p DOUBLE)")
        review.empty_review(con)
    if len(same):
        edge_sets.append(("review", same))
    summary["review_decisions"] = {"same": int(len(same)), "different": int(len(different))}
    _group_table(con, "dup_flags_rules", cluster.components(rule_sets))
    _group_table(con, "dup_flags_all", cluster.components(edge_sets))
    # linkage-only exclusions can be switched off: then the kept flags are those the rules alone give
    kept = "a.is_dup_kept" if lk.exclude_flagged else "coalesce(r.is_dup_kept, true)"
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE dup_flags AS
        WITH s AS (SELECT id, max(p) AS score
                   FROM (SELECT a AS id, b AS other, p FROM lk_scored UNION ALL SELECT b, a, p FROM lk_scored) q
                   JOIN dup_flags_all g1 ON g1.report_id = q.id
                   JOIN dup_flags_all g2 ON g2.report_id = q.other AND g2.dup_group_id = g1.dup_group_id
                   GROUP BY id)
        SELECT a.report_id, a.dup_group_id, a.dup_rule, s.score AS dup_score, {kept} AS is_dup_kept
        FROM dup_flags_all a LEFT JOIN dup_flags_rules r USING (report_id) LEFT JOIN s ON s.id = a.report_id""")
    con.execute("DROP TABLE dup_flags_all")
    con.execute("DROP TABLE lk_scored")
    row = con.execute("SELECT count(DISTINCT dup_group_id), count(*) FROM dup_flags").fetchall()[0]
    largest = con.execute("SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM dup_flags GROUP BY dup_group_id)"
                          ).fetchall()[0][0]
    summary.update(groups=int(row[0]), reports_in_groups=int(row[1]), largest_group=int(largest),
                   by_rule=dict(con.execute("SELECT dup_rule, count(*) FROM dup_flags GROUP BY 1 ORDER BY 1")
                                .fetchall()))
    return summary


def _group_table(con, name: str, comp: dict) -> None:
    """Temp table ``name(report_id, dup_group_id, dup_rule, is_dup_kept)`` of the reports in a group."""
    con.register("_dup_members", pa.table({
        "report_id": pa.array(comp["nodes"], pa.int64()),
        "dup_group_id": pa.array(comp["group"], pa.int64()),
        "dup_rule": pa.array(comp["rule"], pa.string()),
    }))
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {name} AS
        SELECT m.report_id, m.dup_group_id, m.dup_rule,
               row_number() OVER (PARTITION BY m.dup_group_id
                                  ORDER BY (m.report_id IN (SELECT report_id FROM report_ingredients)
                                            AND m.report_id IN (SELECT report_id FROM report_pts)) DESC,
                                           r.fda_dt DESC NULLS LAST, r.caseversion DESC, m.report_id DESC) = 1
                   AS is_dup_kept
        FROM _dup_members m JOIN rep r USING (report_id)""")
    con.unregister("_dup_members")
