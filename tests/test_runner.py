"""runner.run over HTTP: one look at the source page per run, and a second run that changes nothing."""

from __future__ import annotations

from pipeline.layout import DataDir
from pipeline.quarters import parse_range
from pipeline.runner import latest_report, plan, run
from pipeline.synthetic import write_mirror
from tests.support.httpserver import MirrorServer


def test_run_over_http_then_noop(tmp_path):
    mirror = tmp_path / "mirror"
    write_mirror(mirror, parse_range("2024Q1:2024Q2"), reports_per_quarter=1500, seed=3, progress=False)
    dd = DataDir(tmp_path / "data")
    with MirrorServer(mirror) as srv:
        page = srv.url + "index.html"
        first = run(page, dd, progress=False)
        gets = [r for r in srv.faults.requests if r[0] == "GET"]
        assert [r[1] for r in gets].count("/index.html") == 1  # discovered once, not once per quarter
        assert sorted(q["quarter"] for q in first["quarters"]) == ["2024Q1", "2024Q2"]
        assert all(q["downloaded"] and not q["skipped"] for q in first["quarters"])
        report = latest_report(dd)
        assert report is not None and (report / "signals.parquet").exists()
        assert first["changed"]

        srv.faults.requests.clear()
        assert plan(page, dd) == []
        second = run(page, dd, progress=False)
        assert not second["changed"] and second["quarters"] == []
        assert second["signals"].get("skipped") and latest_report(dd) == report
        assert not [r for r in srv.faults.requests if r[0] == "GET" and r[1].endswith(".zip")]

        # a `latest` link whose folder was removed is no report: the next run rebuilds it
        import shutil

        shutil.rmtree(report)
        assert latest_report(dd) is None
        third = run(page, dd, progress=False)
        assert not third["signals"].get("skipped")
        rebuilt = latest_report(dd)
        assert rebuilt is not None and (rebuilt / "signals.parquet").exists()


def test_latest_report_ignores_dangling_link_and_marker(tmp_path):
    dd = DataDir(tmp_path)
    dd.reports.mkdir(parents=True)
    (dd.reports / "latest").symlink_to("gone")
    (dd.reports / "LATEST").write_text("gone\n")
    assert latest_report(dd) is None
    (dd.reports / "kept").mkdir()
    (dd.reports / "LATEST").write_text("kept\n")
    assert latest_report(dd) is None  # a folder without its manifest is not a finished report
    (dd.reports / "kept" / "manifest.json").write_text("{}")
    assert latest_report(dd) == (dd.reports / "kept").resolve()
