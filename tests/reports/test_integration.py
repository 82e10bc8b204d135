"""End to end on a synthetic mirror: sample -> fetch -> ingest -> curate -> build_report, checked against the
generator's truth.json (what a correct pipeline must find)."""

from __future__ import annotations

import json

import pandas as pd
import pytest


@pytest.mark.slow
def test_sample_to_report_matches_truth(tmp_path):
    from pipeline import runner
    from pipeline.curate import curate
    from pipeline.layout import DataDir
    from pipeline.quarters import parse_range
    from pipeline.reports import build_report, focus_table_text
    from pipeline.settings import load_config
    from pipeline.synthetic import write_mirror

    quarters = parse_range("2023Q1:2024Q4")
    mirror = tmp_path / "mirror"
    write_mirror(mirror, quarters, reports_per_quarter=1500, seed=11, progress=False)
    truth = json.loads((mirror / "truth.json").read_text())
    source = (mirror / "index.html").resolve().as_uri()
    data = DataDir(tmp_path / "data")
    for q in quarters:
        runner.fetch_quarter(source, data, str(q))
        runner.ingest_quarter(data, str(q), validate=False)  # raw validation is tested in its own module
    config = load_config(None)
    curate(data, config, progress=False)
    result = build_report(data, config)

    d = result["report_dir"]
    sig = pd.read_parquet(f"{d}/signals.parquet")
    for c in ("substance", "pt", "pt_group"):
        sig[c] = sig[c].astype(object).where(sig[c].notna(), None)
    m = json.loads(open(f"{d}/manifest.json").read())
    assert m["synthetic"] is True
    assert m["counts"]["analysis_population"] == truth["cases"]["analysis_population"]

    groups = sig[sig["pt"].isna()].set_index(["substance", "pt_group"])
    pts = sig[sig["pt"].notna()].set_index(["substance", "pt"])
    for s, t in truth["substances"].items():
        assert int(groups.loc[(s, "dissociation"), "n_drug"]) == t["reports"], s
        for g, a in t["pt_groups"].items():
            assert int(groups.loc[(s, g), "a"]) == a, (s, g)
        for pt, a in t["pairs"].items():
            assert int(pts.loc[(s, pt), "a"]) == a, (s, pt)

    esk = groups.loc[("esketamine", "dissociation")]
    assert esk["a"] >= 3 and esk["a"] == truth["substances"]["esketamine"]["pt_groups"]["dissociation"]
    assert esk["ror_lo"] > 1 and bool(esk["signal_ror"])

    text = focus_table_text(d, substance="esketamine", pt_group="dissociation")
    assert "SYNTHETIC DATA" in text and "esketamine" in text
    html_text = open(f"{d}/report.html", encoding="utf-8").read()
    assert 'id="synthetic-banner"' in html_text
