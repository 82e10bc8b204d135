"""Terminal focus table and the `signals` / `show` commands."""

from __future__ import annotations

import argparse

import pandas as pd
import pytest

from tests.reports.conftest import report_dir


def _table_lines(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, x in enumerate(lines) if x.startswith("substance"))
    end = next(i for i in range(start, len(lines)) if not lines[i].strip() or lines[i].startswith(("a = ", "(")))
    return lines[start:end]


def test_focus_table_default_is_every_group_row(built):
    from pipeline.reports import focus_table_text

    _, _, result = built
    d = report_dir(result)
    text = focus_table_text(d)
    sig = pd.read_parquet(d / "signals.parquet")
    rows = _table_lines(text)[2:]
    groups = sig[sig["pt"].isna()]
    assert len(rows) == int((groups["a"] > 0).sum())
    zero = int((groups["a"] == 0).sum())
    assert zero > 0 and f"({zero} substance x PT group row(s) with a = 0 not shown" in text
    assert len(_table_lines(focus_table_text(d, hide_zero=False))[2:]) == len(groups)
    assert "SYNTHETIC DATA" in text and result["run_id"] in text and "not causation" in text
    header = _table_lines(text)[0]
    for col in ("a", "E", "ROR [95% CI]", "IC025", "EB05", "flags"):
        assert col in header
    # aligned: the ROR column ends at the same character offset on every row
    end = header.index("ROR [95% CI]") + len("ROR [95% CI]")
    assert all(len(r) >= end and r[end - 1] in "]—" for r in rows)
    esk = [r for r in rows if r.startswith("esketamine") and " dissociation " in r]
    g = sig[(sig["substance"] == "esketamine") & (sig["pt_group"] == "dissociation")].iloc[0]
    assert esk and f" {int(g['a']):,} " in esk[0] and ("ROR" in esk[0].split()[-3:]) == bool(g["signal_ror"])


def test_focus_table_filters_and_limit(built):
    from pipeline.errors import PipelineError
    from pipeline.reports import focus_table_text

    _, _, result = built
    d = report_dir(result)
    t = focus_table_text(d, substance="esketamine", pt_group=["dissociation", "hypertension"])
    rows = _table_lines(t)[2:]
    assert len(rows) == 2 and all(r.startswith("esketamine") for r in rows)
    t = focus_table_text(d, substance="esketamine", pt="dissociation,DEREALISATION")
    rows = _table_lines(t)[2:]
    assert [r.split("  ")[0] for r in rows] == ["esketamine"] * 2 and all("PT: " in r for r in rows)
    t = focus_table_text(d, limit=3)
    assert len(_table_lines(t)) == 2 + 3 and "(3 of" in t
    t = focus_table_text(d, substance="arketamine", pt_group="dissociation")  # asked by name: shown with a = 0
    rows = _table_lines(t)[2:]
    assert len(rows) == 1 and rows[0].split()[2] == "0"
    t = focus_table_text(d, substance="esketamine", pt_group="dissociation", top_pts=4)
    assert len(_table_lines(t)) == 2 + 1 + 4
    with pytest.raises(PipelineError, match="not in this report"):
        focus_table_text(d, substance="ketorolac")


def _parser():
    from pipeline.reports import register

    p = argparse.ArgumentParser(prog="pipeline")
    p.add_argument("--quiet", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)
    register(sub)
    return p


def test_cli_signals_then_show(fresh, capsys):
    root, _ = fresh
    p = _parser()
    args = p.parse_args(["signals", "--data-dir", str(root), "--substances", "esketamine,ketamine_family",
                         "--from-quarter", "2023Q3"])  # with the progress bar (a cut-off needs raw tables)
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "signals: report" in out and "data through 2024Q4" in out and "esketamine" in out
    args = p.parse_args(["--quiet", "signals", "--data-dir", str(root), "--substances", "esketamine,ketamine_family",
                         "--from-quarter", "2023Q3"])
    assert args.func(args) == 0
    assert "unchanged" in capsys.readouterr().out
    args = p.parse_args(["show", "--data-dir", str(root), "--substance", "esketamine", "--pt-group", "dissociation"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    rows = _table_lines(out)[2:]
    assert len(rows) == 1 and rows[0].startswith("esketamine") and "dissociation" in rows[0]


def test_cli_show_without_report_is_one_line_error(tmp_path):
    from pipeline.errors import PipelineError

    p = _parser()
    args = p.parse_args(["show", "--data-dir", str(tmp_path)])
    with pytest.raises(PipelineError, match="no report"):
        args.func(args)
    args = p.parse_args(["signals", "--data-dir", str(tmp_path)])
    with pytest.raises(PipelineError, match="pipeline curate"):
        args.func(args)


def test_top_pts_same_order_in_terminal_and_page(built):
    """The terminal's top PTs and the page's top-PT tables rank the same PTs in the same order."""
    import re
    from html import unescape

    from pipeline.reports import focus_table_text

    _, _, result = built
    d = report_dir(result)
    sig = pd.read_parquet(d / "signals.parquet")
    html = (d / "report.html").read_text()
    section = html[html.index('<section id="top-pts">'):]
    section = section[:section.index("</section>")]
    for substance in ("esketamine", "ketamine"):
        t = focus_table_text(d, substance=substance, pt_group="dissociation", top_pts=5)
        terminal = [r.split("PT: ", 1)[1].split("  ")[0] for r in _table_lines(t)[2:] if "PT: " in r]
        block = section[section.index(f"<h3>{substance}</h3>"):]
        block = block[:block.index("</table>")] if "</table>" in block else ""
        page = [unescape(x) for x in re.findall(r"<tr><td class=\"\">([^<]+)</td>", block)[:5]]
        # independent ranking: ROR lower bound desc, then IC025 desc, then name
        pts = sig[(sig["substance"] == substance) & sig["pt"].notna() & (sig["a"] >= 3)]
        want = sorted(pts.to_dict("records"),
                      key=lambda r: (-(r["ror_lo"] if r["ror_lo"] == r["ror_lo"] else -1e308),
                                     -(r["ic025"] if r["ic025"] == r["ic025"] else -1e308), str(r["pt"])))
        want = [str(r["pt"]) for r in want[:5]]
        assert terminal == want and page == want, (substance, terminal, page, want)
