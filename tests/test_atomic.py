"""Atomic writes: the old file survives a failed write; published files follow the umask."""

import os
import stat

import pyarrow as pa
import pytest

from pipeline.atomic import atomic_dir, atomic_path, write_json, write_parquet


def test_failed_write_keeps_previous_file(tmp_path):
    target = tmp_path / "x.json"
    write_json({"v": 1}, target)
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text().strip().endswith("}") and '"v": 1' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_failed_dir_swap_keeps_previous_dir(tmp_path):
    target = tmp_path / "report"
    with atomic_dir(target) as d:
        (d / "a.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as d:
        (d / "a.txt").write_text("new")
        raise RuntimeError("crash")
    assert (target / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report"]


def test_modes_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        import importlib

        import pipeline.atomic as atomic

        importlib.reload(atomic)
        p = atomic.write_parquet(pa.table({"a": [1]}), tmp_path / "t.parquet", metadata={"k": "v"})
        assert stat.S_IMODE(p.stat().st_mode) == 0o644
        with atomic.atomic_dir(tmp_path / "d"):
            pass
        assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
    finally:
        os.umask(old)


def test_parquet_metadata(tmp_path):
    import pyarrow.parquet as pq

    write_parquet(pa.table({"a": [1]}), tmp_path / "t.parquet", metadata={"run_id": "r1"})
    assert pq.read_schema(tmp_path / "t.parquet").metadata[b"run_id"] == b"r1"
