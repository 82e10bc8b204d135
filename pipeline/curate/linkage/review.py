"""Analyst review: borderline pairs out (``dup_review``), decisions in (``review_file``)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.errors import PipelineError

#: ``curated/dup_review.parquet``: borderline pairs, fields side by side (``_a`` / ``_b``)
_SIDE = ("event_dt", "age_years", "sex", "reporter_country", "mfr_sndr", "init_fda_dt", "suspects", "pts")
REVIEW = pa.schema(
    [("report_id_a", pa.int64()), ("report_id_b", pa.int64()), ("match_weight", pa.float64()),
     ("match_probability", pa.float64()), ("linked", pa.bool_())]
    + [(f"{f}_{s}", pa.float64() if f == "age_years" else pa.date32() if f == "init_fda_dt" else pa.string())
       for f in _SIDE for s in "ab"])


def review_path(config) -> Path | None:
    name = config.duplicates.linkage.review_file.strip()
    if not name:
        return None
    p = Path(name)
    return p if p.is_absolute() else Path(config.path).parent / p


def read_decisions(config) -> tuple[np.ndarray, np.ndarray]:
    """(same, different): (n, 2) arrays of report-id pairs (smaller id first) from the review CSV."""
    path = review_path(config)
    empty = np.empty((0, 2), np.int64)
    if path is None:
        return empty, empty
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PipelineError(f"duplicates.linkage.review_file {path}: cannot read ({exc.strerror or exc})") from None
    rows = list(csv.DictReader(text.splitlines()))
    same, diff = [], []
    for i, row in enumerate(rows, start=2):
        try:
            a, b = int(row["report_id_a"]), int(row["report_id_b"])
            decision = row["decision"].strip().lower()
        except (KeyError, TypeError, ValueError, AttributeError):
            raise PipelineError(f"duplicates.linkage.review_file {path}: line {i} needs integer report_id_a, "
                                "report_id_b and a decision (same|different)") from None
        if decision not in ("same", "different") or a == b:
            raise PipelineError(f"duplicates.linkage.review_file {path}: line {i}: decision must be 'same' or "
                                "'different' for two different reports")
        (same if decision == "same" else diff).append((min(a, b), max(a, b)))
    as_arr = lambda x: np.array(x, np.int64).reshape(-1, 2)  # noqa: E731
    return as_arr(same), as_arr(diff)


def drop_pairs(edges: np.ndarray, rejected: np.ndarray) -> np.ndarray:
    """``edges`` without the rejected pairs (either orientation)."""
    if not len(edges) or not len(rejected):
        return edges
    lo, hi = np.minimum(edges[:, 0], edges[:, 1]), np.maximum(edges[:, 0], edges[:, 1])
    key = lo * np.int64(1 << 31) + hi  # report ids are caseids < 2**31
    bad = rejected[:, 0] * np.int64(1 << 31) + rejected[:, 1]
    return edges[~np.isin(key, bad)]


def borderline(con, threshold_weight: float, margin_bits: float, max_pairs: int) -> None:
    """Temp table ``dup_review``: scored pairs within ``margin_bits`` of the threshold, closest first."""
    # names are aggregated for the (at most 2 * max_pairs) reports listed only, not for every report
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE dup_review_q AS
        SELECT a, b, w, p FROM lk_scored WHERE abs(w - {threshold_weight}) <= {margin_bits}
        ORDER BY abs(w - {threshold_weight}), a, b LIMIT {int(max_pairs)}""")
    sides = []
    for s in "ab":
        sides.append(f"""r{s}.event_dt AS event_dt_{s}, r{s}.age_years AS age_years_{s}, r{s}.sex AS sex_{s},
               r{s}.reporter_country AS reporter_country_{s}, r{s}.mfr_sndr AS mfr_sndr_{s},
               r{s}.init_fda_dt AS init_fda_dt_{s}, i{s}.v AS suspects_{s}, t{s}.v AS pts_{s}""")
    joins = " ".join(f"JOIN rep r{s} ON r{s}.report_id = q.{s} LEFT JOIN si i{s} ON i{s}.report_id = q.{s} "
                     f"LEFT JOIN sp t{s} ON t{s}.report_id = q.{s}" for s in "ab")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE dup_review AS
        WITH ids AS (SELECT a AS report_id FROM dup_review_q UNION SELECT b FROM dup_review_q),
             si AS (SELECT report_id, string_agg(DISTINCT ingredient, '; ' ORDER BY ingredient) AS v
                    FROM report_ingredients SEMI JOIN ids USING (report_id)
                    WHERE role_cod IN ('PS', 'SS', 'I') GROUP BY report_id),
             sp AS (SELECT report_id, string_agg(DISTINCT pt, '; ' ORDER BY pt) AS v
                    FROM report_pts SEMI JOIN ids USING (report_id) GROUP BY report_id)
        SELECT q.a AS report_id_a, q.b AS report_id_b, q.w AS match_weight, q.p AS match_probability,
               q.w >= {threshold_weight} AS linked,
               {sides[0].replace(chr(10), ' ')},
               {sides[1].replace(chr(10), ' ')}
        FROM dup_review_q q {joins}
        ORDER BY abs(q.w - {threshold_weight}), q.a, q.b""")
    con.execute("DROP TABLE dup_review_q")
    # column order as the contract
    cols = ", ".join(f.name for f in REVIEW)
    con.execute(f"CREATE OR REPLACE TEMP TABLE dup_review AS SELECT {cols} FROM dup_review")


def empty_review(con) -> None:
    con.register("_dup_review_empty", pa.table({f.name: pa.array([], f.type) for f in REVIEW}))
    con.execute("CREATE OR REPLACE TEMP TABLE dup_review AS SELECT * FROM _dup_review_empty")
    con.unregister("_dup_review_empty")
