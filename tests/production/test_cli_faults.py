"""Faults the command line survives: SIGKILL at random points, two runs on one data dir, a full disk.

No service needed. Every outcome is compared with one uninterrupted run on the same synthetic mirror.
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.layout import DataDir
from tests.production.support import ROOT, leftovers, sample_mirror, tree_digest

pytestmark = pytest.mark.slow

SEED = 20261204


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", "--quiet", *args]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _run(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(*args), capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=600, **kw)


def outcome(data_dir: Path) -> dict:
    """What must not depend on how the run got there: curated tables and the report's tables (rows and schema)."""
    latest = DataDir.of(data_dir).latest_report()
    assert latest is not None, f"no report in {data_dir}"
    curated = {f"curated/{k}": v for k, v in tree_digest(data_dir / "curated").items() if k.endswith(".parquet")}
    report = {f"report/{k}": v for k, v in tree_digest(latest).items()
              if k in ("signals.parquet", "all_pairs.parquet", "funnel.parquet")}
    return curated | report


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-faults")
    mirror = sample_mirror(root / "mirror", "2024Q1:2024Q3", 800, seed=SEED)
    t0 = time.monotonic()
    done = _run("run", "--source", str(mirror), "--data-dir", str(root / "ref"))
    assert done.returncode == 0, done.stderr
    return {"mirror": mirror, "dir": root / "ref", "seconds": time.monotonic() - t0,
            "outcome": outcome(root / "ref")}


def _published_files_are_whole(data_dir: Path) -> None:
    """Everything a reader can see is complete: every Parquet file opens, every ingested quarter has all its tables."""
    for p in data_dir.rglob("*.parquet"):
        if any(part.startswith(".") for part in p.relative_to(data_dir).parts):
            continue  # staging and temporaries are not published (and the next writer sweeps them)
        pq.read_metadata(p)
    dd = DataDir.of(data_dir)
    for q in dd.ingested_quarters():
        for table in ("DEMO", "DRUG", "REAC", "OUTC", "RPSR", "THER", "INDI", "DELETED"):
            assert dd.raw_part(table, q).is_file(), (q, table)


#: where each stage of a run leaves its unfinished work (what a SIGKILL there leaves behind)
STAGES = (("ingest", ".staging"), ("curate", ".curated.*.tmp"), ("report", ".reports-staging"))


def _wait_for(folder: Path, pattern: str, proc: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if any(folder.glob(pattern)):
            return True
        time.sleep(0.02)
    return False


def test_run_killed_at_random_points_then_rerun_equals_an_uninterrupted_run(reference, tmp_path):
    """SIGKILL inside each stage in turn (ingest, curation, report), at a seeded random delay after the stage began;
    every attempt resumes the previous one's work. Then one rerun must equal an uninterrupted run."""
    rng = random.Random(SEED)
    data = tmp_path / "data"
    kills = []
    for stage, marker in STAGES:
        delay = rng.uniform(0.0, 0.8)
        proc = subprocess.Popen(_cmd("run", "--source", str(reference["mirror"]), "--data-dir", str(data)),
                                cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            if _wait_for(data, marker, proc, 300):
                time.sleep(delay)
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    kills.append((stage, round(delay, 2), "killed"))
            proc.wait(timeout=300)
        finally:
            proc.kill()
        if not kills or kills[-1][0] != stage:
            kills.append((stage, round(delay, 2), "finished first"))
        _published_files_are_whole(data)
    assert [k for _, _, k in kills].count("killed") >= 2, kills
    final = _run("run", "--source", str(reference["mirror"]), "--data-dir", str(data))
    assert final.returncode == 0, final.stderr
    assert outcome(data) == reference["outcome"], kills
    assert leftovers(data) == [], kills
    print(f"\nSIGKILL points (stage, seconds after it began): {kills}")


def _stderr_line(proc: subprocess.Popen, needle: str, timeout: float) -> str:
    """The first stderr line of ``proc`` containing ``needle`` (read on a thread: no sleeps, no timing guesses)."""
    found: list[str] = []
    done = threading.Event()

    def read():
        for line in proc.stderr:
            if needle in line:
                found.append(line.strip())
                done.set()
                return
        done.set()

    threading.Thread(target=read, daemon=True).start()
    assert done.wait(timeout) and found, f"no {needle!r} on stderr"
    return found[0]


def test_two_runs_on_one_data_dir(reference, tmp_path):
    """Deterministic: the first run is frozen (SIGSTOP) while it holds the lock, so the second must meet it.

    Without the ``flock`` of pipeline/lock.py the second run is not refused: it runs to the end beside the frozen first
    one (exit 0), and the test fails there."""
    data = tmp_path / "data"
    args = ("run", "--source", str(reference["mirror"]), "--data-dir", str(data))
    first = subprocess.Popen(_cmd(*args), cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    lock = data / ".pipeline.lock"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the lock file names its holder once the lock is taken
        try:
            if json.loads(lock.read_text() or "{}").get("pid") == first.pid:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    else:
        first.kill()
        pytest.fail("the first run never took the lock")
    os.kill(first.pid, signal.SIGSTOP)
    try:
        refused = _run(*args)
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode == 75, refused.stderr
        assert len(lines) == 1 and lines[0].startswith(f"error: data directory {data}") and \
            f"pid {first.pid}" in lines[0] and "--wait" in lines[0], lines
        waiting = subprocess.Popen(_cmd(*args, "--wait"), cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        line = _stderr_line(waiting, "waiting for data directory", 60)
        assert f"pid {first.pid}" in line
        assert waiting.poll() is None  # still blocked: the first run holds the lock
    finally:
        os.kill(first.pid, signal.SIGCONT)
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    w_out, _ = waiting.communicate(timeout=600)
    assert waiting.returncode == 0
    assert w_out.startswith("run: nothing new")  # it waited, then found the first run's work done
    assert outcome(data) == reference["outcome"]
    assert leftovers(data) == []


def test_disk_full_during_ingest_leaves_earlier_data_intact(reference, tmp_path):
    """FDA re-publishes a quarter and the disk fills while it is re-ingested (a file-size limit): one line, exit 6,
    the quarter exactly as it was before (not a mix of old and new tables), nothing half-written left."""
    data = tmp_path / "data"
    shutil.copytree(reference["dir"] / "landing", data / "landing")
    assert _run("ingest", "--quarters", "2024Q1", "--data-dir", str(data)).returncode == 0
    before = tree_digest(data / "raw") | {f"q/{k}": v for k, v in tree_digest(data / "quarantine").items()}
    republished = sample_mirror(tmp_path / "republished", "2024Q1", 800, seed=SEED + 1)
    shutil.copy(republished / "faers_ascii_2024q1.zip", data / "landing" / "faers_ascii_2024q1.zip")
    # half the largest table: the small tables of the new version fit, the large ones do not
    limit = max(p.stat().st_size for p in (data / "raw").rglob("*.parquet")) // 2

    def small_disk():  # writes past `limit` bytes fail with EFBIG (Python ignores SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    full = _run("ingest", "--quarters", "2024Q1:2024Q2", "--data-dir", str(data), preexec_fn=small_disk)
    lines = full.stderr.strip().splitlines()
    assert full.returncode == 6, full.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and "File too large" in lines[0], lines
    after = tree_digest(data / "raw") | {f"q/{k}": v for k, v in tree_digest(data / "quarantine").items()}
    assert after == before  # 2024Q1 as it was, 2024Q2 not half there
    assert [str(q) for q in DataDir.of(data).ingested_quarters()] == ["2024Q1"]
    assert leftovers(data) == []
    assert _run("ingest", "--data-dir", str(data)).returncode == 0  # room again: the rest goes in
    assert [str(q) for q in DataDir.of(data).ingested_quarters()] == ["2024Q1", "2024Q2", "2024Q3"]
    assert tree_digest(data / "raw") != tree_digest(reference["dir"] / "raw")  # 2024Q1 is now the new version
