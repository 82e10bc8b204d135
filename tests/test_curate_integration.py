"""sample -> fetch -> ingest -> curate equals the synthetic generator's truth.json."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow.parquet as pq
import pytest

from pipeline.curate import curate
from pipeline.layout import DataDir
from pipeline.quarters import parse_range
from pipeline.settings import load_config



@pytest.fixture(scope="module")
def curated(tmp_path_factory):
    from pipeline.ingest import ingest
    from pipeline.sources import fetch
    from pipeline.synthetic import write_mirror

    root = tmp_path_factory.mktemp("sample")
    mirror = root / "mirror"
    # LAERS, FAERS-A, FAERS-B and 2019Q1 (AllDeletedCases) in one run
    write_mirror(mirror, parse_range("2012Q3,2012Q4,2014Q3,2019Q1,2019Q2"), reports_per_quarter=1200, seed=7,
                 progress=False)
    dd = DataDir.of(root / "data")
    fetch(str(mirror), dd, progress=False)
    # raw-layer expectations are the quality module's business; this test is about curation
    ingest(dd, progress=False, validate=False)
    summary = curate(dd, load_config(), progress=False)
    return dd, summary, json.loads((mirror / "truth.json").read_text())


def test_case_counts_equal_truth(curated):
    dd, s, truth = curated
    c = truth["cases"]
    funnel = {f["name"]: f for f in s["funnel"]}
    assert s["kept_cases"] == c["kept_cases"]
    assert funnel["reports without any drug or any PT"]["reports_out"] == c["kept_cases_with_drug_and_pt"]
    assert s["analysis_population"] == c["analysis_population"]
    assert (funnel["duplicate-flag exclusions"]["reports_in"] - funnel["duplicate-flag exclusions"]["reports_out"]
            == c["duplicate_excluded"])
    assert funnel["deleted caseids removed"]["reports_in"] >= funnel["deleted caseids removed"]["reports_out"]


def test_duplicate_groups_equal_truth(curated):
    dd, _, truth = curated
    rep = pq.read_table(dd.curated / "reports.parquet").to_pylist()
    groups: dict[int, set] = {}
    for r in rep:
        if r["dup_group_id"] is not None:
            groups.setdefault(r["dup_group_id"], set()).add(r["report_id"])
    assert sorted(map(sorted, groups.values())) == sorted(map(sorted, truth["cases"]["duplicate_groups"]))


def test_substance_reports_and_focus_pairs_equal_truth(curated):
    dd, s, truth = curated
    for sub, t in truth["substances"].items():
        assert s["substance_reports"][sub] == t["reports"], sub
    rep = {r["report_id"] for r in pq.read_table(dd.curated / "reports.parquet").to_pylist() if r["in_analysis"]}
    ing = pq.read_table(dd.curated / "report_ingredients.parquet").to_pylist()
    exposed: dict[str, set] = {}
    for i in ing:
        if i["substance"] and i["is_exposure"] and i["report_id"] in rep:
            exposed.setdefault(i["substance"], set()).add(i["report_id"])
            exposed.setdefault("ketamine_family", set()).add(i["report_id"])
    pts: dict[int, set] = {}
    for p in pq.read_table(dd.curated / "report_pts.parquet").to_pylist():
        pts.setdefault(p["report_id"], set()).add(p["pt"])
    for sub, t in truth["substances"].items():
        got = Counter(pt for r in exposed.get(sub, ()) for pt in pts.get(r, ()))
        assert {pt: got[pt] for pt in t["pairs"]} == t["pairs"], sub
        for group, a in t.get("pt_groups", {}).items():
            members = set(truth["pt_groups"][group])
            assert sum(1 for r in exposed.get(sub, ()) if pts.get(r, set()) & members) == a, (sub, group)


def test_real_legacy_and_faers_zips(tmp_path):
    """The real 2004Q1 (LAERS) and 2017Q2 (FAERS-B) sample zips through the real ingester: every case kept,
    LAERS versions are 0 (blank foll_seq), child rows reach LAERS cases through the ISR."""
    import shutil
    from pathlib import Path

    from pipeline.ingest import ingest
    from pipeline.sources import fetch

    src = tmp_path / "src"
    src.mkdir()
    for z in (Path(__file__).parent / "fixtures" / "Yunuuuu_faers").glob("*.zip"):
        shutil.copy(z, src / z.name)
    dd = DataDir.of(tmp_path / "data")
    fetch(str(src), dd, progress=False)
    ingest(dd, progress=False, validate=False)
    s = curate(dd, load_config(), progress=False)
    demo = pq.read_table(dd.raw_part("DEMO", parse_range("2004Q1")[0])).to_pylist()
    rep = pq.read_table(dd.curated / "reports.parquet").to_pylist()
    laers = [r for r in rep if r["era"] == "laers"]
    assert len(laers) == len({d["caseid_int"] for d in demo})
    assert all(r["caseversion"] == 0 for r in laers if not any(
        d["caseid_int"] == r["report_id"] and d["caseversion"].strip() for d in demo))
    assert all(r["has_drug"] and r["has_pt"] for r in laers)
    assert {m["quarter"] for m in json.loads((dd.curated / "manifest.json").read_text())["inputs"]} == {
        "2004Q1", "2017Q2"}
    assert s["kept_cases"] == len(rep)
