"""report.html: every section present, self-contained, numbers consistent with signals.parquet; headless render."""

from __future__ import annotations

import json
import math
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from tests.reports.conftest import report_dir

SECTIONS = ("summary", "headline", "forest", "trend", "top-pts", "funnel", "unmapped", "name-conflicts", "methods",
            "disclaimer", "provenance")
CHROMIUM = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
                 if Path(p).exists()), None)


class Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: dict[str, str] = {}
        self.stack: list[str] = []
        self.text: dict[str, list[str]] = {}
        self.urls: list[str] = []
        self.tags: dict[str, int] = {}
        self.svgs = 0
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if "id" in a:
            self.ids[a["id"]] = tag
        if tag == "section":
            self.stack.append(a.get("id", ""))
        for k in ("src", "href", "xlink:href"):
            if k in a and a[k] and not a[k].startswith("#"):
                self.urls.append(a[k])
        if tag == "svg":
            self.svgs += 1
        if tag == "table":
            self.tables.append([])
        if tag == "tr" and self.tables:
            self.tables[-1].append([])
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "section" and self.stack:
            self.stack.pop()
        if tag in ("td", "th") and self._cell is not None and self.tables and self.tables[-1]:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        for s in self.stack:
            self.text.setdefault(s, []).append(data)
        if self._cell is not None:
            self._cell.append(data)


def _parse(path: Path) -> Page:
    p = Page()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def test_every_section_present_and_self_contained(built):
    _, _, result = built
    d = report_dir(result)
    page = _parse(d / "report.html")
    for s in SECTIONS:
        assert page.ids.get(s) == "section", s
        assert "".join(page.text.get(s, [])).strip(), f"section {s} is empty"
    assert page.ids.get("synthetic-banner") == "div"  # the fixture has the generator's README marker
    assert page.svgs >= 4  # forest plots, trend, funnel
    assert not page.tags.get("script") and not page.tags.get("link") and not page.tags.get("img")
    external = [u for u in page.urls if u.startswith(("http:", "https:", "//"))]
    assert external == []
    text = (d / "report.html").read_text()
    assert "Disproportionality is not causation" in "".join(page.text["disclaimer"])
    assert result["run_id"] in text
    m = json.loads((d / "manifest.json").read_text())
    methods = " ".join(page.text["methods"])
    for needle in ("Counting unit", "Role rule", "De-duplication", "Signal rules", "MGPS", m["config"]["sha256"],
                   m["mgps"]["likelihood"], "PS, SS"):
        assert needle in methods, needle
    assert "MYSTERY TABS" in " ".join(page.text["unmapped"])
    assert "HERBAL &lt;TEA&gt; &amp; CO" in text  # escaped
    conflicts = " ".join(page.text["name-conflicts"])
    assert "SPRAVATO <NASAL>" in conflicts and "SPRAVATO &lt;NASAL&gt;" in text and "2 drug row(s)" in conflicts
    assert m["counts"]["name_conflict_rows"] == 2


def test_headline_numbers_match_signals(built):
    _, _, result = built
    d = report_dir(result)
    page = _parse(d / "report.html")
    sig = pd.read_parquet(d / "signals.parquet")
    groups = sig[sig["pt"].isna()]
    headline = next(t for t in page.tables if t and t[0][:3] == ["substance", "PT group", "a"])
    body = headline[1:]
    col = {h: i for i, h in enumerate(headline[0])}
    assert len(body) == len(groups)
    current = None
    for cells, r in zip(body, groups.itertuples()):
        current = cells[0] or current  # the substance is printed on the first row of its block
        assert current == r.substance and cells[1] == r.pt_group
        assert int(cells[2].replace(",", "")) == r.a
        flags = cells[col["flags"]]
        assert ("ROR" in flags) == bool(r.signal_ror) and ("IC" in flags) == bool(r.signal_ic)
        if math.isnan(r.eb05):
            assert cells[col["EB05"]] == "—"
        q = cells[col["Fisher q"]]
        assert q == "—" if math.isnan(r.fisher_q) else float(q) == pytest.approx(r.fisher_q, rel=5e-3, abs=5e-4)


def test_top_pts_ranked_by_lower_bound_not_count(built):
    _, _, result = built
    d = report_dir(result)
    page = _parse(d / "report.html")
    sig = pd.read_parquet(d / "signals.parquet")
    top_tables = [t for t in page.tables if t and t[0][:2] == ["PT", "a"]]
    assert top_tables
    esk = sig[(sig["substance"] == "esketamine") & sig["pt"].notna() & (sig["a"] >= 3)]
    want = list(esk.sort_values("ror_lo", ascending=False)["pt"].astype(str).head(15))
    names = [r[0] for r in top_tables[1][1:]]  # tables follow the substance order: ketamine, esketamine, ...
    assert names == want


def test_display_conventions():
    from pipeline.reports.html import fmt

    assert fmt(float("nan")) == "—" and fmt(None) == "—"
    assert fmt(float("inf")) == "∞" and fmt(float("-inf")) == "−∞"
    assert fmt(209.2617) == "209" and fmt(2.782105) == "2.78" and fmt(12345, "int") == "12,345"
    assert fmt(6.48e-47, "p") == "6.48e-47"


def test_not_synthetic_has_no_banner(built, config):
    from pipeline.reports.html import render_report

    root, _, result = built
    d = report_dir(result)
    m = json.loads((d / "manifest.json").read_text())
    m["synthetic"] = False
    import pyarrow.parquet as pq

    html_text = render_report(manifest=m, signals=pd.read_parquet(d / "signals.parquet"),
                              trend=pd.read_parquet(d / "trend.parquet"),
                              funnel=pd.read_parquet(d / "funnel.parquet"),
                              unmapped=pq.read_table(root / "curated" / "unmapped_drugs.parquet").to_pandas(),
                              config=config)
    assert "synthetic-banner" not in html_text and "SYNTHETIC DATA" not in html_text


def test_data_docs_link_when_present(fresh, config):
    from pipeline.reports import build_report

    root, _ = fresh
    docs = root / "validation" / "data_docs"
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "index.html").write_text("<html></html>")
    res = build_report(root, config)
    d = report_dir(res)
    page = _parse(d / "report.html")
    link = next(u for u in page.urls if u.endswith("data_docs/index.html"))
    assert (d / link).resolve() == (docs / "index.html").resolve()


@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium (Debian package 'chromium') on this machine; "
                                             "the HTML is still parsed and checked by the other tests")
def test_headless_chromium_renders(built, tmp_path):
    _, _, result = built
    d = report_dir(result)
    png = tmp_path / "report.png"
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--window-size=1280,2400", f"--screenshot={png}", (d / "report.html").as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert png.exists() and png.stat().st_size > 20_000, proc.stderr[-2000:]
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                          (d / "report.html").as_uri()], capture_output=True, text=True, timeout=120)
    for s in SECTIONS:
        assert f'id="{s}"' in dom.stdout, s
    print(f"screenshot: {png}")


def test_text_from_the_data_is_escaped(built, config):
    """A PT, drug or substance name carrying markup reaches the page as text, never as a tag."""
    import pyarrow.parquet as pq

    from pipeline.reports.html import render_report

    root, _, result = built
    d = report_dir(result)
    m = json.loads((d / "manifest.json").read_text())
    evil = "<script>alert('x')</script>"
    m["run_id"] = m["created_at"] = evil
    m["config"]["path"] = evil
    signals = pd.read_parquet(d / "signals.parquet")
    for c in ("pt", "pt_group"):
        signals[c] = signals[c].astype(object)
    signals.loc[signals["pt"].notna(), "pt"] = evil  # every PT row: the top-PT tables and the forest plot
    signals.loc[signals["pt"].isna(), "pt_group"] = evil  # every PT-group row: the summary and the headline
    unmapped = pq.read_table(root / "curated" / "unmapped_drugs.parquet").to_pandas()
    unmapped["drugname"] = evil
    conflicts = pd.DataFrame([{"report_id": 1, "drugname": evil, "prod_ai": evil, "substance_from_drugname": "x",
                               "substance_from_prod_ai": None, "chosen": None, "reason": evil}])
    page = render_report(manifest=m, signals=signals, trend=pd.read_parquet(d / "trend.parquet"),
                         funnel=pd.read_parquet(d / "funnel.parquet"), unmapped=unmapped, config=config,
                         name_conflicts=conflicts)
    assert "<script" not in page.lower()
    escaped = "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"
    for section in ("headline", "top-pts", "unmapped", "name-conflicts", "methods"):
        start = page.index(f'<section id="{section}"')
        assert escaped in page[start:page.index("</section>", start)], section
    assert f'<meta name="faers-run-id" content="{escaped}">' in page
