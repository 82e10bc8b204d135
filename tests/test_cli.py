"""The command line: every INTERFACE command exists, is documented, and fails with one line."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INTERFACE_COMMANDS = ["sample", "fetch", "ingest", "curate", "signals", "run", "demo", "disproportionality", "show"]


def _run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "pipeline", "--quiet", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "FAERS_FETCH_RETRIES": "0"}, timeout=120)


def test_help_lists_every_command_and_readme_documents_it():
    helptext = _run("--help").stdout
    readme = (ROOT / "README.md").read_text()
    for cmd in INTERFACE_COMMANDS:
        assert re.search(rf"^\s+{cmd}\b", helptext, re.M), cmd
        assert f"`{cmd}" in readme, f"README does not document {cmd}"
        sub = _run(cmd, "--help")
        assert sub.returncode == 0 and sub.stdout.strip(), cmd


@pytest.mark.parametrize("args, message", [
    (["ingest", "--data-dir", "{tmp}/empty"], "error: no FAERS ASCII zips in"),
    (["ingest", "--quarters", "2024Q9", "--data-dir", "{tmp}"], "error: not a quarter: '2024Q9'"),
    (["curate", "--config", "{tmp}/missing.toml", "--data-dir", "{tmp}"], "error: "),
    (["fetch", "--source", "{tmp}/nowhere", "--data-dir", "{tmp}"], "error: source not found"),
])
def test_bad_input_one_line_nonzero(tmp_path, args, message):
    proc = _run(*[a.format(tmp=tmp_path) for a in args])
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), proc.stderr
    assert "Traceback" not in proc.stderr


def test_os_error_has_its_own_exit_code(tmp_path):
    """A file where the data folder should be is an OS error (6), told apart from a failed validation (5)."""
    from pipeline.errors import OS_ERROR_EXIT
    from pipeline.quality import ValidationFailed

    blocker = tmp_path / "data"
    blocker.write_text("not a folder")
    proc = _run("sample", "--out", str(blocker / "mirror"), "--quarters", "2024Q1", "--reports-per-quarter", "50")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == OS_ERROR_EXIT == 6, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert ValidationFailed.exit_code == 5 != OS_ERROR_EXIT


def test_cli_reads_faers_config_like_the_dags(tmp_path):
    """``FAERS_CONFIG`` picks the configuration for the CLI as it does for the DAGs; ``--config`` still wins."""
    missing = tmp_path / "from-env.toml"
    proc = subprocess.run([sys.executable, "-m", "pipeline", "--quiet", "curate", "--data-dir", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "FAERS_CONFIG": str(missing)})
    assert proc.returncode == 2 and f"config {missing}: cannot read" in proc.stderr, proc.stderr
    from pipeline.settings import DEFAULT_CONFIG_PATH

    proc = subprocess.run([sys.executable, "-m", "pipeline", "--quiet", "curate", "--data-dir", str(tmp_path),
                           "--config", str(DEFAULT_CONFIG_PATH)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "FAERS_CONFIG": str(missing)})
    assert "from-env.toml" not in proc.stderr, proc.stderr


def test_ingest_takes_the_quarantine_gate_from_the_config(tmp_path):
    """``[thresholds] quarantine_rate_max`` is the critical quarantined share of a large file (>= 10,000 lines):
    a config below the quarter's share refuses it (exit 5, one line), the shipped config ingests it."""
    import json

    from pipeline.settings import DEFAULT_CONFIG_PATH

    mirror, data = tmp_path / "mirror", tmp_path / "data"
    assert _run("sample", "--out", str(mirror), "--quarters", "2012Q1", "--reports-per-quarter", "3500").returncode == 0
    assert _run("fetch", "--source", str(mirror), "--data-dir", str(data)).returncode == 0
    text = DEFAULT_CONFIG_PATH.read_text()
    assert "quarantine_rate_max = 0.001\n" in text
    strict = tmp_path / "strict.toml"
    strict.write_text(text.replace("quarantine_rate_max = 0.001\n", "quarantine_rate_max = 0.00001\n"))
    proc = _run("ingest", "--config", str(strict), "--data-dir", str(data))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 5 and len(lines) == 1 and "quarantine_rate_large" in lines[0], proc.stderr
    failed = json.loads((data / "validation" / "raw" / "2012Q1.failed.json").read_text())
    large = [c for c in failed["critical_failures"] if "quarantine_rate_large" in json.dumps(c)]
    assert large, failed["critical_failures"]
    assert _run("ingest", "--data-dir", str(data)).returncode == 0


def test_curate_force_rebuilds_unchanged_inputs(tmp_path):
    """Unchanged inputs, config and code make ``curate`` a no-op; ``--force`` curates (and validates) again."""
    mirror, data = tmp_path / "mirror", tmp_path / "data"
    assert _run("sample", "--out", str(mirror), "--quarters", "2024Q1", "--reports-per-quarter", "300").returncode == 0
    assert _run("fetch", "--source", str(mirror), "--data-dir", str(data)).returncode == 0
    assert _run("ingest", "--data-dir", str(data)).returncode == 0
    first = _run("curate", "--data-dir", str(data))
    assert first.returncode == 0 and "analysis population" in first.stdout, first.stderr
    manifest = data / "curated" / "manifest.json"
    inode = manifest.stat().st_ino
    again = _run("curate", "--data-dir", str(data))
    assert again.returncode == 0 and "unchanged; curated tables kept" in again.stdout, again.stderr
    assert manifest.stat().st_ino == inode
    forced = _run("curate", "--data-dir", str(data), "--force")
    assert forced.returncode == 0 and "analysis population" in forced.stdout, forced.stderr
    assert manifest.stat().st_ino != inode  # a new folder was swapped in
