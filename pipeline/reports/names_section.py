"""The report's ``name-conflicts`` section: drug rows whose drugname and prod_ai name different ketamine-family
substances (``curated/name_conflicts.parquet``), grouped by name pair so a person can review them."""

from __future__ import annotations

from html import escape
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


def section_html(conflicts: pd.DataFrame | None, limit: int = 50) -> str:
    """``<section id="name-conflicts">``: every text escaped; an empty table says so."""
    intro = ('<p>Drug rows whose <code>drugname</code> and <code>prod_ai</code> name different ketamine-family '
             'substances, or where only the drugname names one. The more specific name was counted '
             '(stereo-specific or metabolite &gt; explicitly racemic &gt; plain KETAMINE; a tie keeps FDA\'s '
             '<code>prod_ai</code>); when <code>prod_ai</code> names another drug it is kept. All kept drug rows '
             'of any role are listed in <code>curated/name_conflicts.parquet</code>.</p>')
    if conflicts is None:
        return ('<section id="name-conflicts"><h2>Substance-name conflicts</h2><p>Not available: the curated tables '
                'predate <code>name_conflicts.parquet</code> (run <code>pipeline curate</code>).</p></section>')
    pairs = conflict_pairs(conflicts)
    if pairs.empty:
        return f'<section id="name-conflicts"><h2>Substance-name conflicts</h2>{intro}<p>None.</p></section>'
    shown = pairs.head(limit)
    head = ["drug name", "prod_ai", "drugname says", "prod_ai says", "counted as", "reason", "DRUG rows", "reports"]
    rows = "".join(
        "<tr>" + "".join(f"<td>{escape(str(r[k]) or '—')}</td>" for k in KEYS)
        + f'<td class="num">{int(r["n_rows"]):,}</td><td class="num">{int(r["n_reports"]):,}</td></tr>'
        for r in shown.to_dict("records"))
    count = (f"<p>{len(shown)} of {len(pairs):,} name pairs ({len(conflicts):,} drug rows), by reports.</p>"
             if len(shown) < len(pairs) else f"<p>{len(pairs):,} name pair(s), {len(conflicts):,} drug row(s).</p>")
    table = ('<table class="data small"><thead><tr>' + "".join(f"<th>{h}</th>" for h in head)
             + f"</tr></thead><tbody>{rows}</tbody></table>")
    return f'<section id="name-conflicts"><h2>Substance-name conflicts</h2>{intro}{count}{table}</section>'
