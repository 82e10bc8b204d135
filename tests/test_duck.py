"""Bounded memory: every heavy step opens DuckDB through pipeline.duck with config [resources].

The fixture is small (5 quarters x 8,000 reports, three eras), so the limit is proportionally tiny: 48 MB with one
thread (or the next of 64/96 MB that fits) is below curation's working set (DuckDB writes spill files, seen by polling the spill folder) and above
what DuckDB cannot spill; 128 MB for signals (its analyses hold more at once). Curated tables under the limit
equal those of an unlimited run; signals complete.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from pipeline import duck
from pipeline.errors import PipelineError, ResourceError
from pipeline.layout import DataDir
from pipeline.settings import DEFAULT_CONFIG_PATH, load_config

ROOT = Path(__file__).resolve().parents[1]


def _config(tmp: Path, memory_limit: str, threads: int = 1, temp_directory: str = ".duckdb-spill",
            curate_memory_limit: str = "") -> Path:
    """The shipped config with these resources; curation takes ``memory_limit`` unless ``curate_memory_limit``."""
    text = DEFAULT_CONFIG_PATH.read_text()
    assert '\nmemory_limit = "4GB"\n' in text and '\ncurate_memory_limit = "6GB"\n' in text
    text = text.replace('\nmemory_limit = "4GB"\n', f'\nmemory_limit = "{memory_limit}"\n')
    text = text.replace('\ncurate_memory_limit = "6GB"\n', f'\ncurate_memory_limit = "{curate_memory_limit}"\n')
    text = text.replace("\nthreads = 2\n", f"\nthreads = {threads}\n")
    text = text.replace('temp_directory = ".duckdb-spill"', f'temp_directory = "{temp_directory}"')
    path = tmp / f"config-{memory_limit}-{threads}-{curate_memory_limit}.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory) -> DataDir:
    from pipeline.ingest import ingest
    from pipeline.quarters import parse_range
    from pipeline.sources import fetch
    from pipeline.synthetic import write_mirror

    root = tmp_path_factory.mktemp("duck")
    write_mirror(root / "mirror", parse_range("2012Q3,2012Q4,2014Q3,2019Q1,2019Q2"), reports_per_quarter=8000,
                 seed=7, progress=False)
    dd = DataDir.of(root / "data")
    fetch(str(root / "mirror"), dd, progress=False)
    ingest(dd, progress=False, validate=False)  # raw validation is not what this module tests
    return dd


def _copy_raw(src: DataDir, dst: Path) -> DataDir:
    import shutil

    shutil.copytree(src.root / "raw", dst / "raw")
    return DataDir.of(dst)


class _SpillWatcher:
    """Polls the spill folder while a step runs and remembers the largest spill file seen."""

    def __init__(self, folder: Path):
        self.folder, self.max_bytes, self._stop = folder, 0, False
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        while not self._stop:
            try:
                for f in list(self.folder.rglob("*.tmp")):
                    self.max_bytes = max(self.max_bytes, f.stat().st_size)
            except OSError:  # a spill file or folder removed while we looked
                pass
            time.sleep(0.005)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop = True
        self._thread.join()


def _sorted(table):
    return table.sort_by([(c, "ascending") for c in table.column_names
                          if not str(table.schema.field(c).type).startswith(("list", "struct", "map"))])


def test_curate_completes_by_spilling_under_a_tiny_limit(raw_dir, tmp_path):
    from pipeline.curate import curate
    from pipeline.curate.run import ALL_TABLES

    free = _copy_raw(raw_dir, tmp_path / "free")
    tight = _copy_raw(raw_dir, tmp_path / "tight")
    curate(free, load_config(_config(tmp_path, "4GB", 2)), progress=False)
    # the smallest of these limits that curation fits in by spilling (what DuckDB cannot spill grows with the
    # curation rules; the point is: below its working set it completes, and equals the unlimited result)
    for limit in ("48MB", "64MB", "96MB"):
        try:
            with _SpillWatcher(tight.root / ".duckdb-spill") as watch:
                curate(tight, load_config(_config(tmp_path, limit, 1)), progress=False)
            break
        except ResourceError:
            continue
    else:
        pytest.fail("curation did not fit in 96 MB")
    assert watch.max_bytes > 0, f"curation under {limit} should have spilled to the data dir"
    for name in ALL_TABLES:
        a = pq.read_table(free.curated / f"{name}.parquet")
        b = pq.read_table(tight.curated / f"{name}.parquet")
        assert _sorted(a.replace_schema_metadata()).equals(_sorted(b.replace_schema_metadata())), name
    assert not (tight.root / ".duckdb-spill").exists(), "spill folders are removed after each step"


@pytest.mark.slow
def test_signals_complete_by_spilling_under_a_tiny_limit(raw_dir, tmp_path):
    from pipeline.curate import curate
    from pipeline.reports import build_report

    dd = _copy_raw(raw_dir, tmp_path / "sig")
    curate(dd, load_config(_config(tmp_path, "4GB", 2)), progress=False)
    # the smallest of these limits that the report fits in by spilling (as for curation above)
    for limit in ("32MB", "48MB", "64MB", "96MB", "128MB"):
        try:
            with _SpillWatcher(dd.root / ".duckdb-spill") as watch:
                out = build_report(dd, load_config(_config(tmp_path, limit, 1)), progress=False, force=True)
            break
        except ResourceError:
            continue
    else:
        pytest.fail("signals did not fit in 128 MB")
    assert watch.max_bytes > 0, f"signals under {limit} should have spilled to the data dir"
    assert out["changed"] and (Path(out["report_dir"]) / "signals.parquet").exists()
    assert not (dd.root / ".duckdb-spill").exists(), "spill folders are removed after each step"


def test_out_of_memory_is_one_line_and_exit_7(raw_dir, tmp_path):
    dd = _copy_raw(raw_dir, tmp_path / "oom")
    cfg = _config(tmp_path, "4MB", 1)
    proc = subprocess.run([sys.executable, "-m", "pipeline", "--quiet", "curate", "--config", str(cfg),
                           "--data-dir", str(dd.root)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == ResourceError.exit_code == 7, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: curate: out of memory"), proc.stderr
    assert "resources.memory_limit = '4MB'" in lines[0]
    assert "Traceback" not in proc.stderr


def test_curation_has_its_own_limit_named_in_its_error(raw_dir, tmp_path):
    """``curate_memory_limit`` bounds curation's connection (and its one-line error names it); every other
    connection keeps ``memory_limit``; empty means ``memory_limit``."""
    res = load_config(_config(tmp_path, "64MB", 1, curate_memory_limit="96MB")).resources
    for label, mib in (("curate", "91"), ("signals", "61"), ("counting", "61")):
        with duck.connect(res, DataDir.of(tmp_path), label=label) as con:
            assert con.execute("SELECT current_setting('memory_limit')").fetchone()[0].startswith(mib), label
    with duck.connect(load_config(_config(tmp_path, "64MB", 1)).resources, DataDir.of(tmp_path),
                      label="curate") as con:
        assert con.execute("SELECT current_setting('memory_limit')").fetchone()[0].startswith("61")
    shipped = load_config(None).resources
    assert shipped.limit_of("curate") == ("resources.curate_memory_limit", "6GB")
    assert shipped.limit_of("signals") == ("resources.memory_limit", "4GB")

    dd = _copy_raw(raw_dir, tmp_path / "oom")
    cfg = _config(tmp_path, "4GB", 1, curate_memory_limit="4MB")
    proc = subprocess.run([sys.executable, "-m", "pipeline", "--quiet", "curate", "--config", str(cfg),
                           "--data-dir", str(dd.root)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 7, proc.stderr
    assert "error: curate: out of memory within resources.curate_memory_limit = '4MB'" in proc.stderr


def test_spill_folder_is_inside_the_data_dir_unless_absolute(tmp_path):
    res = duck.Resources(memory_limit="64MB", threads=1, temp_directory="spill")
    assert duck.spill_dir(res, DataDir.of(tmp_path)) == tmp_path / "spill"
    assert duck.spill_dir(duck.Resources(temp_directory=str(tmp_path / "x")), DataDir.of("/elsewhere")) \
        == tmp_path / "x"
    with duck.connect(res, DataDir.of(tmp_path), label="t") as con:
        assert con.execute("SELECT current_setting('memory_limit')").fetchone()[0].startswith("61")  # 64 MB in MiB
        assert con.execute("SELECT current_setting('threads')").fetchone()[0] == 1
        spill = Path(con.execute("SELECT current_setting('temp_directory')").fetchone()[0])
        assert spill.parent == tmp_path / "spill" and spill.is_dir()
    assert not (tmp_path / "spill").exists()


def test_python_memory_error_becomes_resource_error(tmp_path):
    with pytest.raises(ResourceError, match="ran out of memory"):
        with duck.connect(duck.Resources(memory_limit="64MB"), DataDir.of(tmp_path)):
            raise MemoryError


@pytest.mark.parametrize("key, value, message", [
    ("memory_limit", '"lots"', "must be a size"),
    ("curate_memory_limit", '"6 gigs"', "must be a size"),
    ("threads", "0", "must be >= 1"),
    ("temp_directory", '"  "', "is empty"),
])
def test_bad_resources_are_rejected_naming_the_key(tmp_path, key, value, message):
    text = DEFAULT_CONFIG_PATH.read_text()
    start = text.index("[resources]")
    head, tail = text[:start], text[start:]
    lines = [f"{key} = {value}" if ln.split("=")[0].strip() == key else ln for ln in tail.splitlines()]
    path = tmp_path / "bad.toml"
    path.write_text(head + "\n".join(lines) + "\n")
    with pytest.raises(PipelineError, match=f"resources.{key}' {message}"):
        load_config(path)


@pytest.mark.slow
def test_signals_out_of_memory_is_one_line_for_the_dag(raw_dir, tmp_path):
    """``runner.signals_run`` (the signals DAG's task) under a limit the report cannot fit in raises the one-line
    ResourceError, as the CLI prints it, not DuckDB's own exception from the analyses' connection."""
    from pipeline import runner
    from pipeline.curate import curate

    dd = _copy_raw(raw_dir, tmp_path / "oom")
    curate(dd, load_config(_config(tmp_path, "4GB", 2)), progress=False)
    with pytest.raises(ResourceError) as info:
        runner.signals_run(dd, _config(tmp_path, "8MB", 1))
    msg = str(info.value)
    assert "\n" not in msg and "signals: out of memory within resources.memory_limit = '8MB'" in msg, msg
    assert not isinstance(info.value, duckdb.OutOfMemoryException)
