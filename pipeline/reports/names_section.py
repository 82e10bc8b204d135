"""The report's ``name-conflicts`` section: drug rows whose drugname and prod_ai name different ketamine-family
substances (``curated/name_conflicts.parquet``), grouped by name pair so a person can review them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

KEYS = ["drugname", "prod_ai", "substance_from_drugname", "substance_from_prod_ai", "chosen", "reason"]


def read_conflicts(curated_dir: Path) -> pd.DataFrame | None:
    """The curated table, or ``None`` when the curated folder predates it."""
    path = Path(curated_dir) / "name_conflicts.parquet"
    return pd.read_parquet(path) if path.exists() else None


def conflict_pairs(conflicts: pd.DataFrame) -> pd.DataFrame:
    """One row per distinct (drugname, prod_ai, readings, choice, reason) with its drug rows and reports, most
    reports first."""
    if conflicts is None or conflicts.empty:
        return pd.DataFrame(columns=[*KEYS, "n_rows", "n_reports"])
    g = conflicts.fillna({k: "" for k in KEYS}).groupby(KEYS, sort=False)
    out = g.agg(n_rows=("report_id", "size"), n_reports=("report_id", "nunique")).reset_index()
    return out.sort_values(["n_reports", "n_rows", "drugname", "prod_ai"],
                           ascending=[False, False, True, True], kind="stable").reset_index(drop=True)


def context(conflicts: pd.DataFrame | None, limit: int = 50) -> dict | None:
    """What ``templates/name_conflicts.html.j2`` shows: the ``limit`` name pairs with most reports, plain text and
    formatted counts (``None`` when the curated folder predates the table)."""
    if conflicts is None:
        return None
    pairs = conflict_pairs(conflicts)
    shown = pairs.head(limit)
    return {"shown": len(shown), "more": len(shown) < len(pairs), "n_pairs": f"{len(pairs):,}",
            "n_rows": f"{len(conflicts):,}",
            "rows": [{"texts": [str(r[k]) or "—" for k in KEYS], "n_rows": f"{int(r['n_rows']):,}",
                      "n_reports": f"{int(r['n_reports']):,}"} for r in shown.to_dict("records")]}


def section_html(conflicts: pd.DataFrame | None, limit: int = 50) -> str:
    """``<section id="name-conflicts">``: every text escaped; an empty table says so."""
    from pipeline.reports.html import render_template

    return render_template("name_conflicts.html.j2", nc=context(conflicts, limit))
