"""The standalone ``disproportionality`` command, end to end through an argparse parser."""

from __future__ import annotations

import argparse
import json

import pandas as pd
import pyarrow.parquet as pq
import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.stats.command import register


def run(argv):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["disproportionality", *argv])
    return args.func(args)


def test_reports_csv_to_parquet_with_metadata(tmp_path, pvda, capsys):
    src = tmp_path / "pvda.csv"
    pvda.to_csv(src, index=False)
    out = tmp_path / "out.parquet"
    assert run(["--input", str(src), "--out", str(out)]) == 0
    table = pq.read_table(out)
    df = table.to_pandas()
    assert len(df) == 1306 and set(df["n_total"]) == {1000}
    assert not df.duplicated(["drug", "event"]).any()
    meta = json.loads(table.schema.metadata[b"disproportionality"])
    sidecar = json.loads((tmp_path / "out.parquet.json").read_text())
    assert meta == sidecar
    assert sidecar["mgps"]["likelihood"] == "openebgm" and "theta" in sidecar["mgps"]
    assert sidecar["input"]["kind"] == "reports" and len(sidecar["input"]["sha256"]) == 64
    assert "1,306" in capsys.readouterr().out


def test_counts_parquet_to_csv_and_options(tmp_path, caers_counts):
    src = tmp_path / "counts.parquet"
    pq.write_table(caers_counts, src)
    out = tmp_path / "out.csv"
    assert run(["--input", str(src), "--out", str(out), "--input-kind", "counts", "--mgps-likelihood",
                "zero-inclusive", "--confidence-level", "0.9", "--haldane"]) == 0
    df = pd.read_csv(out)
    assert len(df) == 17_189
    side = json.loads((tmp_path / "out.csv.json").read_text())
    assert side["mgps"]["likelihood"] == "zero-inclusive" and side["haldane"] is True
    assert side["confidence_level"] == 0.9 and side["mgps"]["n_zero_cells"] == 3_816_672 - 17_189


def test_strata(tmp_path, caers):
    src = tmp_path / "caers.parquet"
    caers.to_parquet(src)
    out = tmp_path / "s.parquet"
    assert run(["--input", str(src), "--out", str(out), "--strata", "strat1"]) == 0
    df = pq.read_table(out).to_pandas()
    # E stays crude (PRR/ROR/IC are crude); MGPS uses the stratified E and keeps crude-E columns beside it
    assert {"expected_strat", "ebgm_crude", "eb05_crude", "eb95_crude"} <= set(df.columns)
    assert (df["expected"] != df["expected_strat"]).any()
    np.testing.assert_allclose(df["expected"], df["n_drug"] * df["n_event"] / df["n_total"], rtol=1e-12)
    assert (df["ebgm"] != df["ebgm_crude"]).any() and df["ebgm_crude"].notna().all()
    side = json.loads((tmp_path / "s.parquet.json").read_text())
    assert side["strata"] == ["strat1"] and side["mgps_crude"]["published"]


@pytest.mark.parametrize("content, kind, msg", [
    (None, "reports", "not found"),
    ("report_id,drug\n1,a\n", "reports", "missing column"),
    ("drug,event,a,n_drug,n_event,n_total\nx,y,-1,3,3,10\n", "counts", "negative"),
    ("drug,event,a,n_drug,n_event,n_total\nx,y,5,3,6,10\n", "counts", "a > n_drug"),
    ("drug,event,a,n_drug\nx,y,1,3\n", "counts", "missing column"),
])
def test_bad_input_is_a_one_line_pipeline_error(tmp_path, content, kind, msg):
    src = tmp_path / "in.csv"
    if content is not None:
        src.write_text(content)
    with pytest.raises(PipelineError, match=msg) as exc:
        run(["--input", str(src), "--out", str(tmp_path / "o.parquet"), "--input-kind", kind])
    assert "\n" not in str(exc.value)


def test_bad_extensions(tmp_path, pvda):
    src = tmp_path / "pvda.csv"
    pvda.to_csv(src, index=False)
    with pytest.raises(PipelineError, match="extension"):
        run(["--input", str(src), "--out", str(tmp_path / "o.xlsx")])
    (tmp_path / "x.xlsx").write_text("x")
    with pytest.raises(PipelineError, match="extension"):
        run(["--input", str(tmp_path / "x.xlsx"), "--out", str(tmp_path / "o.csv")])
