"""The report's duplicate-review section: borderline linkage pairs (``curated/dup_review.parquet``) side by side, so an
analyst can confirm or reject them through ``duplicates.linkage.review_file``."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

#: (label, column stem) shown side by side
FIELDS = (("event date", "event_dt"), ("age (y)", "age_years"), ("sex", "sex"), ("country", "reporter_country"),
          ("sender", "mfr_sndr"), ("first received", "init_fda_dt"), ("suspect ingredients", "suspects"),
          ("PTs", "pts"))


def read_review(curated_dir: Path) -> pd.DataFrame | None:
    """The curated table, or ``None`` when the curated folder predates it."""
    path = Path(curated_dir) / "dup_review.parquet"
    return pd.read_parquet(path) if path.exists() else None


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NaT or (not isinstance(v, str) and pd.isna(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v) or "—"


def context(review: pd.DataFrame | None, limit: int = 30) -> dict | None:
    """What ``templates/dup_review.html.j2`` shows: the first ``limit`` pairs, fields side by side as plain text
    (``None`` when the curated folder predates the table)."""
    if review is None:
        return None
    pairs = [{"a": int(r["report_id_a"]), "b": int(r["report_id_b"]),
              "probability": f"{float(r['match_probability']):.3f}",
              "verdict": "linked" if r["linked"] else "not linked",
              "fields": [(label, _cell(r[f"{col}_a"]), _cell(r[f"{col}_b"])) for label, col in FIELDS]}
             for r in review.head(limit).to_dict("records")]
    return {"pairs": pairs, "more": len(pairs) < len(review), "total": f"{len(review):,}"}


def section_html(review: pd.DataFrame | None, limit: int = 30) -> str:
    """``<section id="dup-review">``: every text escaped; an empty table says so."""
    from pipeline.reports.html import render_template

    return render_template("dup_review.html.j2", review=context(review, limit))
