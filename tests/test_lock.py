"""The data-directory lock (pipeline/lock.py) and `ingest` carrying on past a bad quarter."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.errors import DataDirBusy
from pipeline.layout import DataDir
from pipeline.lock import data_dir_lock, quarter_lock
from tests.support.fda import minimal_quarter, write_zip

ROOT = Path(__file__).resolve().parents[1]

# A second process that tries the lock and reports what happened (flock locks are per open file: a thread would
# share this process's re-entry bookkeeping, so the contender must be another process).
CONTENDER = """
import sys, time
from pipeline.errors import DataDirBusy
from pipeline.layout import DataDir
from pipeline.lock import data_dir_lock, quarter_lock
root, how = sys.argv[1], sys.argv[2]
dd = DataDir.of(root)
try:
    if how.startswith("quarter="):
        cm = quarter_lock(dd, how.split("=")[1], wait=False)
    else:
        cm = data_dir_lock(dd, shared=how == "shared", wait=False)
    with cm:
        print("got")
except DataDirBusy as exc:
    print("busy:", exc)
"""


def _try(root: Path, how: str) -> str:
    out = subprocess.run([sys.executable, "-c", CONTENDER, str(root), how], capture_output=True, text=True,
                         cwd=ROOT, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_exclusive_refuses_everyone_and_names_the_holder(tmp_path):
    dd = DataDir.of(tmp_path)
    with data_dir_lock(dd, command="pipeline run --data-dir x"):
        for how in ("exclusive", "shared", "quarter=2024Q1"):
            got = _try(tmp_path, how)
            assert got.startswith("busy:") and f"pid {os.getpid()}" in got and "pipeline run" in got, got
    assert _try(tmp_path, "exclusive") == "got"  # released on exit


def test_shared_holders_coexist_but_keep_a_writer_out(tmp_path):
    dd = DataDir.of(tmp_path)
    with quarter_lock(dd, "2024Q1"):
        assert _try(tmp_path, "shared") == "got"
        assert _try(tmp_path, "quarter=2024Q2") == "got"  # another quarter goes on in parallel
        assert _try(tmp_path, "quarter=2024Q1").startswith("busy:")  # the same quarter does not
        assert _try(tmp_path, "exclusive").startswith("busy:")


def test_reentrant_within_one_process_and_no_upgrade(tmp_path):
    dd = DataDir.of(tmp_path)
    with data_dir_lock(dd):
        with data_dir_lock(dd), data_dir_lock(dd, shared=True):  # runner steps nested in `run`
            pass
        assert _try(tmp_path, "shared").startswith("busy:")  # still held after the inner exits
    with data_dir_lock(dd, shared=True):
        with pytest.raises(RuntimeError, match="cannot upgrade"):
            with data_dir_lock(dd):
                pass


def test_lock_dies_with_its_holder(tmp_path):
    """SIGKILL of the holder frees the lock at once: no stale lock file to clean up by hand."""
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                               "from pipeline.layout import DataDir\nfrom pipeline.lock import data_dir_lock\n"
                               "with data_dir_lock(DataDir.of(sys.argv[1])):\n    print('held', flush=True)\n"
                               "    time.sleep(60)\n", str(tmp_path)],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        assert _try(tmp_path, "exclusive").startswith("busy:")
        holder.kill()
        holder.wait(timeout=30)
        assert _try(tmp_path, "exclusive") == "got"
    finally:
        holder.kill()


def test_wait_with_timeout(tmp_path):
    dd = DataDir.of(tmp_path)
    with data_dir_lock(dd, command="first"):
        code = ("import sys\nfrom pipeline.layout import DataDir\nfrom pipeline.lock import data_dir_lock\n"
                "from pipeline.errors import DataDirBusy\n"
                "try:\n    data_dir_lock(DataDir.of(sys.argv[1]), wait=True, timeout=0.5).__enter__()\n"
                "except DataDirBusy as e:\n    print(e)\n")
        t0 = time.monotonic()
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
        assert "still in use" in out.stdout and "`first`" in out.stdout, out
        assert time.monotonic() - t0 >= 0.5
    assert DataDirBusy.exit_code == 75


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pipeline", "--quiet", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)


def test_cli_refuses_a_held_data_dir_with_exit_75(tmp_path):
    dd = DataDir.of(tmp_path)
    with data_dir_lock(dd, command="pipeline run (test)"):
        proc = _cli("ingest", "--data-dir", str(tmp_path))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 75, proc.stderr
    assert len(lines) == 1 and lines[0].startswith(f"error: data directory {tmp_path}") and "--wait" in lines[0]
    assert "pipeline run (test)" in lines[0]


def test_ingest_carries_on_past_a_bad_quarter(tmp_path):
    """Three landed quarters, the middle one a broken zip: the other two are ingested, the bad one is named."""
    landing = tmp_path / "landing"
    write_zip(landing / "faers_ascii_2024q1.zip", minimal_quarter("24Q1"))
    (landing / "faers_ascii_2024q2.zip").write_bytes(b"PK\x03\x04 this is not a zip")
    write_zip(landing / "faers_ascii_2024q3.zip", minimal_quarter("24Q3"))
    proc = _cli("ingest", "--data-dir", str(tmp_path))
    assert proc.returncode == 4, proc.stderr  # IngestError's code
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: 2024Q2 not ingested: faers_ascii_2024q2.zip"), errors
    assert "ingested 2 quarter(s), 0 unchanged, 1 failed" in proc.stdout
    dd = DataDir.of(tmp_path)
    assert [str(q) for q in dd.ingested_quarters()] == ["2024Q1", "2024Q3"]
    assert "Traceback" not in proc.stderr
    # fixed at the source: the next ingest takes the repaired quarter, the good ones are unchanged
    write_zip(landing / "faers_ascii_2024q2.zip", minimal_quarter("24Q2"))
    again = _cli("ingest", "--data-dir", str(tmp_path))
    assert again.returncode == 0 and "ingested 1 quarter(s), 2 unchanged" in again.stdout, again


def test_exclusive_holder_sweeps_what_a_crashed_writer_left(tmp_path):
    debris = [".staging/2024Q1/raw/demo/quarter=2024Q1/part.parquet", "raw/demo/quarter=2024Q1/.part.parquet.x1y2.tmp",
              ".reports-staging/run1/signals.parquet", "curated.old-123/reports.parquet", ".curated.old-123/x",
              ".curate-spill-abc/spill.bin", "reports/.latest.99.tmp", ".curated.abc.tmp/reports.parquet"]
    kept = ["raw/demo/quarter=2024Q1/part.parquet", "landing/faers_ascii_2024q1.zip.part", "curated/reports.parquet",
            "reports/run1/signals.parquet"]
    for rel in debris + kept:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    dd = DataDir.of(tmp_path)
    with data_dir_lock(dd, shared=True):  # a shared holder must not sweep: writers may be running beside it
        pass
    assert all((tmp_path / rel).exists() for rel in debris)
    with data_dir_lock(dd):
        pass
    left = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()} - {".pipeline.lock"}
    assert left == set(kept) | {"curated.old-123/reports.parquet"}  # not a dot-name: not one of ours
