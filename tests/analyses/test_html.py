"""report.html: the analyses sections are present, escaped and consistent with the Parquet files; headless
Chromium renders them when it is installed."""

from __future__ import annotations

import subprocess

import pandas as pd
import pytest

from tests.reports.test_html import CHROMIUM, _parse

SECTIONS = ("cases", "outcomes", "sensitivity", "subgroups", "comparators", "onset", "by-use")


def test_sections_present_and_consistent(analysed):
    _, _, d = analysed
    page = _parse(d / "report.html")
    for s in SECTIONS:
        assert page.ids.get(s) == "section", s
        assert "".join(page.text.get(s, [])).strip(), s
    html = (d / "report.html").read_text()
    assert "<script" not in html
    sens_table = next(t for t in page.tables if t and t[0][:3] == ["substance", "PT group", "main"])
    assert sens_table[0][2:] == ["main", "PS only", "sole suspect", "health professionals", "duplicates included",
                                 "indication PTs excluded", "family masked"]
    sens = pd.read_parquet(d / "sensitivity.parquet")
    body = sens_table[1:]
    for cells in body[:10]:
        s, g = cells[0], cells[1]
        for label, scenario in (("main", "main"), ("PS only", "ps_only")):
            r = sens[(sens["scenario"] == scenario) & (sens["substance"] == s) & (sens["pt_group"] == g)].iloc[0]
            cell = cells[2 + sens_table[0][2:].index(label)]
            assert cell.split(" · ")[0].replace(",", "") == str(int(r["a"])), (s, g, label)
    out = pd.read_parquet(d / "outcomes.parquet")
    otab = next(t for t in page.tables if t and t[0][:4] == ["substance", "PT group", "a", "serious"])
    first = out[out["pt"].isna()].iloc[0]
    assert otab[1][:3] == [first["substance"], first["pt_group"], str(int(first["a"]))]
    assert "Gastaldon" in "".join(page.text["comparators"])  # comparator sources are shown
    assert page.svgs >= 5  # the onset plot besides the report's own figures


def test_text_from_data_is_escaped(analysed, config, tmp_path):
    import json

    from pipeline import analyses
    from pipeline.analyses.section import render_sections

    _, _, d = analysed
    tables = {n: pd.read_parquet(d / f"{n}.parquet") for n in analyses.FILES}
    tables["cases"].loc[0, "category"] = "<b>x</b> & y"
    html = render_sections(analyses.Results(tables=tables), manifest=json.loads((d / "manifest.json").read_text()),
                           config=config)
    assert "&lt;b&gt;x&lt;/b&gt; &amp; y" in html and "<b>x</b>" not in html


@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium (Debian package 'chromium') on this machine; "
                                             "the HTML is still parsed and checked by the other tests")
def test_headless_chromium_renders_the_sections(analysed, tmp_path):
    _, _, d = analysed
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                          (d / "report.html").as_uri()], capture_output=True, text=True, timeout=120)
    for s in SECTIONS:
        assert f'id="{s}"' in dom.stdout, s
    png = tmp_path / "sections.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1280,6000", f"--screenshot={png}", (d / "report.html").as_uri()],
                   capture_output=True, text=True, timeout=120)
    assert png.exists() and png.stat().st_size > 20_000
