"""Aligned text tables of a report folder: what ``signals``, ``demo`` and ``show`` print.

Default slice: every substance x PT group row. ``pt`` selects PTs (case-insensitive), ``top_pts`` adds each
substance's best PTs ranked by the ROR lower bound, ``limit`` caps the rows. NaN prints as "—", infinity as "∞".
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path

import pandas as pd

from pipeline.reports.html import fmt as _num  # one display rule for page and terminal

FLAGS = (("signal_prr", "PRR"), ("signal_ror", "ROR"), ("signal_ic", "IC"), ("signal_ebgm", "EB"))


def _as_set(v) -> set[str] | None:
    if v is None:
        return None
    if isinstance(v, str):
        v = v.split(",")
    out = {str(x).strip() for x in v if str(x).strip()}
    return out or None


def select_rows(signals: pd.DataFrame, substance=None, pt_group=None, pt=None, top_pts: int = 0,
                min_a: int = 3) -> pd.DataFrame:
    subs, groups, pts = _as_set(substance), _as_set(pt_group), _as_set(pt)
    df = signals
    if subs:
        unknown = subs - set(df["substance"].astype(str))
        if unknown:
            from pipeline.errors import PipelineError

            raise PipelineError(f"show: substance(s) not in this report: {', '.join(sorted(unknown))} "
                                f"(has {', '.join(dict.fromkeys(df['substance'].astype(str)))})")
        df = df[df["substance"].astype(str).isin(subs)]
    parts = []
    if pts:
        keys = {p.lower() for p in pts}
        parts.append(df[df["pt"].notna() & df["pt"].astype(str).str.lower().isin(keys)])
    if groups or not pts:
        g = df[df["pt"].isna()]
        if groups:
            g = g[g["pt_group"].astype(str).isin(groups)]
        parts.insert(0, g)
    if top_pts and top_pts > 0:
        from pipeline.reports.ranking import top_pts as ranked

        for s in dict.fromkeys(df["substance"].astype(str)):
            parts.append(ranked(df, s, int(top_pts), min_a))
    out = pd.concat(parts) if parts else df.iloc[0:0]
    out = out[~out.index.duplicated()]
    order = {s: i for i, s in enumerate(dict.fromkeys(signals["substance"].astype(str)))}
    # PT rows in the order of ranking.top_pts (ROR lower bound, IC lower bound, name), as on the page
    out = out.assign(_s=out["substance"].astype(str).map(order), _k=out["pt"].notna().astype(int),
                     _lo=-out["ror_lo"].astype(float).fillna(-math.inf),
                     _ic=-out["ic025"].astype(float).fillna(-math.inf), _pt=out["pt"].astype(str))
    keys = ["_s", "_k", "_lo", "_ic", "_pt"]
    return out.sort_values(keys, kind="mergesort").drop(columns=keys)


def format_table(rows: pd.DataFrame, conf_label: str = "95% CI") -> str:
    """The rows as an aligned plain-text table (rich, no colour: it goes to logs and pipes as well)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1), header_style="")
    for name, justify in (("substance", "left"), ("PT group / PT", "left"), ("a", "right"), ("E", "right"),
                          (f"ROR [{conf_label}]", "right"), ("IC025", "right"), ("EB05", "right"),
                          ("flags", "left")):
        table.add_column(name, justify=justify, no_wrap=True)
    for r in rows.to_dict("records"):
        event = r["pt_group"] if r.get("pt") is None or (isinstance(r.get("pt"), float) and math.isnan(r["pt"])) \
            else f"PT: {r['pt']}"
        flags = " ".join(n for c, n in FLAGS if bool(r[c])) or "-"
        table.add_row(str(r["substance"]), str(event), _num(r["a"], "int"), _num(r["expected"]),
                      f"{_num(r['ror'])} [{_num(r['ror_lo'])}, {_num(r['ror_hi'])}]", _num(r["ic025"]),
                      _num(r["eb05"]), flags)
    console = Console(file=io.StringIO(), width=400, color_system=None, highlight=False, markup=False,
                      emoji=False, soft_wrap=True)
    console.print(table)
    text = console.file.getvalue()
    return "\n".join(line.rstrip() for line in text.splitlines() if line.strip())


def focus_table_text(report_dir: str | os.PathLike, substance=None, pt_group=None, limit: int | None = None, *,
                     pt=None, top_pts: int = 0, hide_zero: bool | None = None) -> str:
    """The focus table of a report folder as aligned text (a, E, ROR [CI], IC025, EB05, flags).

    ``hide_zero`` (default: True unless PT groups or PTs are asked for by name) leaves out rows with a = 0 and
    says how many.
    """
    report_dir = Path(report_dir)
    manifest = json.loads((report_dir / "manifest.json").read_text())
    signals = pd.read_parquet(report_dir / "signals.parquet")
    for c in ("substance", "pt", "pt_group"):
        signals[c] = signals[c].astype(object).where(signals[c].notna(), None)
    min_a = int(manifest.get("statistics", {}).get("thresholds", {}).get("ror_min_a", 3))
    rows = select_rows(signals, substance, pt_group, pt, top_pts=top_pts, min_a=min_a)
    if hide_zero is None:
        hide_zero = not pt_group and not pt
    zero = int((rows["a"] == 0).sum()) if hide_zero else 0
    if zero:
        rows = rows[rows["a"] > 0]
    total = len(rows)
    if limit is not None and limit >= 0:
        rows = rows.head(int(limit))
    conf = manifest.get("statistics", {}).get("confidence_level", 0.95)
    head = (f"FAERS ketamine-family signals · run {manifest['run_id']} · data through {manifest['data_cutoff']} · "
            f"{manifest['counts']['analysis_population']:,} reports · roles "
            f"{'+'.join(manifest['parameters']['roles'])}")
    lines = []
    if manifest.get("synthetic"):
        lines.append("*** SYNTHETIC DATA (pipeline sample): not FDA data, not real drug safety ***")
    lines.append(head)
    if rows.empty:
        lines.append("(no rows match)")
    else:
        lines.append(format_table(rows, f"{float(conf) * 100:g}% CI"))
    if total > len(rows):
        lines.append(f"({len(rows)} of {total} rows; --limit to see more)")
    if zero:
        lines.append(f"({zero} substance x PT group row(s) with a = 0 not shown; name them with --pt-group)")
    lines.append("a = reports with substance and event; E = expected a; flags: PRR (Evans), ROR (a>=3, lower bound "
                 ">1), IC (IC025>0), EB (EB05>=2). Disproportionality is not causation.")
    lines.append(f"report: {report_dir / 'report.html'}")
    return "\n".join(lines)
