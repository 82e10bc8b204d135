"""The report's duplicate-review section: borderline linkage pairs (``curated/dup_review.parquet``) side by side, so an
analyst can confirm or reject them through ``duplicates.linkage.review_file``."""

from __future__ import annotations

import math
from html import escape
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
    return escape(str(v)) or "—"


def section_html(review: pd.DataFrame | None, limit: int = 30) -> str:
    """``<section id="dup-review">``: every text escaped; an empty table says so."""
    head = '<section id="dup-review"><h2>Duplicate review: borderline pairs</h2>'
    intro = ("<p>Report pairs whose linkage match probability lies near the threshold, closest first, with their "
             "fields side by side. Confirm or reject a pair by adding <code>report_id_a,report_id_b,same</code> or "
             "<code>…,different</code> to the CSV named by <code>duplicates.linkage.review_file</code> and "
             "re-running <code>pipeline curate</code>. All listed pairs are in "
             "<code>curated/dup_review.parquet</code>.</p>")
    if review is None:
        return head + ("<p>Not available: the curated tables predate <code>dup_review.parquet</code> (run "
                       "<code>pipeline curate</code>).</p></section>")
    if review.empty:
        return head + intro + "<p>None (no borderline pairs, or linkage skipped: see the funnel).</p></section>"
    shown = review.head(limit)
    blocks = []
    for r in shown.to_dict("records"):
        verdict = "linked" if r["linked"] else "not linked"
        rows = "".join(f"<tr><th>{escape(label)}</th><td>{_cell(r[f'{col}_a'])}</td><td>{_cell(r[f'{col}_b'])}</td>"
                       "</tr>" for label, col in FIELDS)
        blocks.append(
            f'<table class="data small"><caption>reports {int(r["report_id_a"])} and {int(r["report_id_b"])}: '
            f'match probability {float(r["match_probability"]):.3f} ({escape(verdict)})</caption>'
            f'<thead><tr><th></th><th>{int(r["report_id_a"])}</th><th>{int(r["report_id_b"])}</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>")
    count = (f"<p>{len(shown)} of {len(review):,} pairs.</p>" if len(shown) < len(review)
             else f"<p>{len(review):,} pair(s).</p>")
    return head + intro + count + "".join(blocks) + "</section>"
