"""Fetch: discovery from an FDA-like page, http://127.0.0.1 downloads, resume, retries, change detection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import SourceError
from pipeline.layout import DataDir
from pipeline.quarters import Quarter
from pipeline.sources import discover, fetch
from tests.support.fda import minimal_quarter, write_zip
from tests.support.httpserver import MirrorServer

ROOT = Path(__file__).resolve().parents[1]

FDA_LIKE_PAGE = """<!DOCTYPE html><html><head><title>FAERS Quarterly Data Extract Files</title></head><body>
<h1>FDA Adverse Event Reporting System (FAERS) Quarterly Data Extract Files</h1>
<table>
<tr><td>2024 Q1</td><td><a href="content/Exports/faers_ascii_2024q1.zip">ASCII (63.1MB)</a></td>
    <td><a href="content/Exports/faers_xml_2024q1.zip">XML</a></td></tr>
<tr><td>2023 Q4</td><td><a href="content/Exports/faers_ascii_2023Q4.zip">ASCII (60MB)</a></td></tr>
<tr><td>2012 Q3</td><td><a href="content/Exports/aers_ascii_2012q3.zip">ASCII</a></td></tr>
<tr><td>other</td><td><a href="/extensions/FPD-QDE-FAERS/FPD-QDE-FAERS.html">this page</a></td></tr>
</table></body></html>"""


@pytest.fixture
def mirror(tmp_path) -> Path:
    root = tmp_path / "mirror"
    exports = root / "content" / "Exports"
    write_zip(exports / "faers_ascii_2024q1.zip", minimal_quarter("24Q1"))
    write_zip(exports / "faers_ascii_2023Q4.zip", minimal_quarter("23Q4"))
    write_zip(exports / "aers_ascii_2012q3.zip", minimal_quarter("12Q3"))  # content irrelevant here
    (root / "index.html").write_text(FDA_LIKE_PAGE)
    return root


def test_discover_fda_like_page_over_http(mirror):
    with MirrorServer(mirror) as srv:
        files = discover(srv.url + "index.html")
    assert [(str(f.quarter), f.name) for f in files] == [
        ("2012Q3", "aers_ascii_2012q3.zip"), ("2023Q4", "faers_ascii_2023Q4.zip"), ("2024Q1", "faers_ascii_2024q1.zip")]
    assert files[-1].url.endswith("/content/Exports/faers_ascii_2024q1.zip")  # relative href resolved
    assert not any("xml" in f.name for f in files)


def test_discover_folder_file_url_and_page_file(mirror):
    exports = mirror / "content" / "Exports"
    assert len(discover(str(exports))) == 3
    assert len(discover(exports.as_uri())) == 3
    assert [f.name for f in discover((mirror / "index.html").as_uri(), [Quarter(2024, 1)])] == ["faers_ascii_2024q1.zip"]


def test_fetch_http_downloads_verifies_and_skips_unchanged(mirror, tmp_path):
    dd = DataDir(tmp_path / "data")
    with MirrorServer(mirror) as srv:
        first = fetch(srv.url + "index.html", dd, progress=False)
        assert sorted(first.downloaded) == ["aers_ascii_2012q3.zip", "faers_ascii_2023Q4.zip", "faers_ascii_2024q1.zip"]
        for name in first.downloaded:
            assert (dd.landing / name).read_bytes() == next(mirror.rglob(name)).read_bytes()
        assert not list(dd.landing.glob("*.part"))
        manifest = json.loads(dd.landing_manifest.read_text())["files"]
        assert manifest["faers_ascii_2024q1.zip"]["quarter"] == "2024Q1"
        assert len(manifest["faers_ascii_2024q1.zip"]["sha256"]) == 64
        srv.faults.requests.clear()
        second = fetch(srv.url + "index.html", dd, progress=False)
        assert second.downloaded == [] and len(second.unchanged) == 3
        assert not [r for r in srv.faults.requests if r[0] == "GET" and r[1].endswith(".zip")]
        # FDA re-publishes a quarter: only that one is downloaded again
        z = mirror / "content" / "Exports" / "faers_ascii_2024q1.zip"
        write_zip(z, minimal_quarter("24Q1", extra={"ASCII/README.txt": b"corrected release"}))
        os.utime(z, (1_800_000_000, 1_800_000_000))
        third = fetch(srv.url + "index.html", dd, progress=False)
        assert third.downloaded == ["faers_ascii_2024q1.zip"]
        assert (dd.landing / "faers_ascii_2024q1.zip").read_bytes() == z.read_bytes()


def test_fetch_resumes_after_cut_connection_with_range(mirror, tmp_path):
    dd = DataDir(tmp_path / "data")
    big = mirror / "content" / "Exports" / "faers_ascii_2024q1.zip"
    write_zip(big, minimal_quarter("24Q1", extra={"ASCII/ASC_NTS.pdf": os.urandom(300_000)}))
    with MirrorServer(mirror) as srv:
        srv.faults.cut_after_bytes = 100_000
        res = fetch(srv.url + "index.html", dd, [Quarter(2024, 1)], progress=False, backoff=0.01)
        ranges = [r[2] for r in srv.faults.requests if r[0] == "GET" and r[1].endswith("2024q1.zip")]
    assert res.downloaded == ["faers_ascii_2024q1.zip"]
    # the second request resumed from what had arrived (whole 64 KiB blocks before the cut)
    assert ranges[0] is None and ranges[1] == "bytes=65536-"
    assert (dd.landing / big.name).read_bytes() == big.read_bytes()


def test_fetch_retries_server_errors(mirror, tmp_path):
    dd = DataDir(tmp_path / "data")
    with MirrorServer(mirror) as srv:
        srv.faults.fail_next = 2
        res = fetch(srv.url + "index.html", dd, [Quarter(2023, 4)], progress=False, backoff=0.01)
    assert res.downloaded == ["faers_ascii_2023Q4.zip"]


def test_corrupt_download_never_lands(mirror, tmp_path):
    dd = DataDir(tmp_path / "data")
    z = mirror / "content" / "Exports" / "faers_ascii_2024q1.zip"
    z.write_bytes(z.read_bytes()[:-30])  # truncated on the server
    with MirrorServer(mirror) as srv, pytest.raises(SourceError, match="not a valid zip"):
        fetch(srv.url + "index.html", dd, [Quarter(2024, 1)], progress=False, retries=1, backoff=0.01)
    assert not (dd.landing / z.name).exists()


def test_unreachable_and_empty_sources(tmp_path):
    dd = DataDir(tmp_path / "data")
    with pytest.raises(SourceError, match="cannot reach http://127.0.0.1:9/"):
        fetch("http://127.0.0.1:9/", dd, progress=False, retries=1, backoff=0.01)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no FAERS ASCII quarterly zips"):
        fetch(str(tmp_path / "empty"), dd, progress=False)
    with pytest.raises(SourceError, match="source not found"):
        fetch(str(tmp_path / "nope"), dd, progress=False)


def test_requested_quarter_not_offered(mirror, tmp_path):
    with pytest.raises(SourceError, match="does not offer 2030Q1"):
        fetch(str(mirror / "content" / "Exports"), DataDir(tmp_path / "d"), [Quarter(2030, 1)], progress=False)


def test_local_folder_fetch_change_detection(mirror, tmp_path):
    dd = DataDir(tmp_path / "data")
    src = mirror / "content" / "Exports"
    assert len(fetch(str(src), dd, progress=False).downloaded) == 3
    assert fetch(src.as_uri(), dd, progress=False).downloaded == []
    os.utime(src / "faers_ascii_2023Q4.zip", (1_800_000_000, 1_800_000_000))
    assert fetch(str(src), dd, progress=False).downloaded == ["faers_ascii_2023Q4.zip"]


def test_cli_unreachable_source_one_line_nonzero(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pipeline", "--quiet", "fetch", "--source", "http://127.0.0.1:9/x.html",
                           "--data-dir", str(tmp_path / "d")], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "FAERS_FETCH_RETRIES": "0"})
    assert proc.returncode != 0
    err = [line for line in proc.stderr.splitlines() if not line.startswith("20")]  # log lines are timestamped
    assert err == [err[0]] and err[0].startswith("error: cannot reach http://127.0.0.1:9/x.html")
    assert "Traceback" not in proc.stderr
