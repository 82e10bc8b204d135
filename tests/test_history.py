"""The whole FAERS history, scaled down: every quarter 2004Q1-2026Q2 with FDA's relative volumes (a few dozen to a
few hundred reports each), then the nightly increment (2026Q3) and the no-op, through ``pipeline.runner.run`` - the
code path of ``pipeline run`` - on a local source folder. ``bench/bench_history.py`` is the same at real scale.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bench.bench_history import INCREMENT_QUARTER, LAST_HISTORY_QUARTER, fda_volumes
from pipeline.layout import DataDir
from pipeline.quarters import Quarter

pytestmark = pytest.mark.slow

SCALE = 0.0005  # 2004Q1 ~ 24 reports, 2024 ~ 210 reports per quarter


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    from pipeline.quarters import parse_range
    from pipeline.runner import run
    from pipeline.synthetic import write_mirror

    volumes = fda_volumes(SCALE)
    root = tmp_path_factory.mktemp("history")
    write_mirror(root / "mirror", parse_range(",".join(volumes)), reports_per_quarter=volumes, seed=11,
                 progress=False)
    truth = json.loads((root / "mirror" / "truth.json").read_text())
    src = root / "source"
    src.mkdir()
    for q in volumes:
        if q <= LAST_HISTORY_QUARTER:
            os.link(root / "mirror" / truth["zips"][q], src / truth["zips"][q])
    dd = DataDir.of(root / "data")
    first = run(str(src), dd, None, None, progress=False)
    os.link(root / "mirror" / truth["zips"][INCREMENT_QUARTER], src / truth["zips"][INCREMENT_QUARTER])
    increment = run(str(src), dd, None, None, progress=False)
    noop = run(str(src), dd, None, None, progress=False)
    return {"dd": dd, "truth": truth, "volumes": volumes, "first": first, "increment": increment, "noop": noop}


def test_every_quarter_of_every_era_is_ingested_and_reconciled(history):
    dd, truth, volumes = history["dd"], history["truth"], history["volumes"]
    assert len(volumes) == 91 and min(volumes) == "2004Q1"
    assert {Quarter.parse(q).era for q in volumes} == {"laers", "faers_a", "faers_b"}
    assert len(history["first"]["quarters"]) == 90
    for q in volumes:
        rec = json.loads(dd.ingest_record(Quarter.parse(q)).read_text())
        assert rec["reconciled"], q
        rows = pq.read_metadata(dd.raw_part("DEMO", Quarter.parse(q))).num_rows
        quarantined = sum(f["quarantined"] for f in rec["files"] if f["table"] == "DEMO")
        assert rows + quarantined == truth["files"][q]["DEMO"]["data_lines"], q
        assert (dd.validation / "raw" / f"{q}.json").exists(), q


def test_curated_funnel_adds_up_and_holds_every_era(history):
    dd = history["dd"]
    raw_demo = sum(pq.read_metadata(dd.raw_part("DEMO", Quarter.parse(q))).num_rows for q in history["volumes"])
    funnel = sorted(pq.read_table(dd.curated / "funnel.parquet").to_pylist(), key=lambda r: r["step"])
    assert funnel[0]["reports_in"] == raw_demo
    for prev, step in zip(funnel, funnel[1:]):
        assert step["reports_in"] == prev["reports_out"], step["name"]
    reports = pq.read_table(dd.curated / "reports.parquet", columns=["era", "quarter"]).to_pydict()
    assert set(reports["era"]) == {"laers", "faers_a", "faers_b"}
    assert INCREMENT_QUARTER in set(reports["quarter"])


def test_increment_ingests_one_quarter_and_reports_and_the_noop_does_nothing(history):
    first, inc, noop = history["first"], history["increment"], history["noop"]
    assert [q["quarter"] for q in inc["quarters"]] == [INCREMENT_QUARTER]
    assert inc["changed"] and inc["curate"]["changed"]
    assert inc["signals"]["report_dir"] != first["signals"]["report_dir"]
    assert Path(inc["signals"]["report_dir"], "signals.parquet").exists()
    manifest = json.loads(Path(inc["signals"]["report_dir"], "manifest.json").read_text())
    assert manifest["data_cutoff"] == INCREMENT_QUARTER
    assert not noop["changed"] and noop["quarters"] == []
    assert noop["signals"]["report_dir"] == inc["signals"]["report_dir"]
