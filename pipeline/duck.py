"""The one place DuckDB connections are opened: memory limit, threads and spill folder from config ``[resources]``.

A heavy step (curate, signals, the 2x2 counting) opens its connection with :func:`connect`, so the whole
history is processed within ``memory_limit`` by spilling to ``temp_directory`` (a folder inside the data
directory, never the system's /tmp, which is often a small RAM disk). When DuckDB still cannot fit a step in
the limit, :func:`translate` turns its ``OutOfMemoryException`` into a one-line
:class:`~pipeline.errors.ResourceError` (exit code 7) that names the setting to raise.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ResourceError

__all__ = ["Resources", "connect", "open_connection", "close", "configure", "current", "spill_dir", "translate"]


@dataclass(frozen=True)
class Resources:
    """DuckDB settings of every heavy step (config ``[resources]``).

    ``memory_limit``: DuckDB's own limit (e.g. ``"4GB"``); the process peaks somewhat above it (Python, Arrow
    buffers handed to pandas/numpy). ``curate_memory_limit``: the limit of curation's connection (label
    ``"curate"``), empty for ``memory_limit``: curation's joins spill less with more, and its peak is what the
    memory budget of a first load allows, not the one of ``signals``. ``threads``: DuckDB worker threads.
    ``temp_directory``: spill folder, relative to the data directory unless absolute.
    """

    memory_limit: str = "4GB"
    threads: int = 2
    temp_directory: str = ".duckdb-spill"
    curate_memory_limit: str = ""

    def limit_of(self, label: str) -> tuple[str, str]:
        """(setting name, limit) that bounds a connection labelled ``label``."""
        if label == "curate" and self.curate_memory_limit:
            return "resources.curate_memory_limit", self.curate_memory_limit
        return "resources.memory_limit", self.memory_limit


_current: Resources = Resources()
_current_root: Path | None = None


def sql_str(value) -> str:
    """``value`` as a SQL string literal (quotes doubled), for paths and names spliced into DuckDB statements."""
    return "'" + str(value).replace("'", "''") + "'"


def memory_limit_bytes(con) -> int:
    """The ``memory_limit`` of connection ``con`` in bytes (it reports e.g. ``'3.7 GiB'``)."""
    text = con.execute("SELECT current_setting('memory_limit')").fetchone()[0].strip()
    num, _, unit = text.partition(" ")
    scale = {"": 1, "bytes": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40,
             "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
    return int(float(num) * scale.get(unit.strip(), 1))


def configure(resources: Resources | None, data_dir=None) -> None:
    """Set the resources (and data directory) that :func:`connect` uses when called without them.

    Library functions that open their own connection (the 2x2 counting) then follow the command's config.
    """
    global _current, _current_root
    if resources is not None:
        _current = resources
    if data_dir is not None:
        _current_root = Path(getattr(data_dir, "root", data_dir))


def current() -> Resources:
    return _current


def spill_dir(resources: Resources, data_dir=None) -> Path:
    """The spill parent folder: ``temp_directory`` under the data directory (or as given when absolute)."""
    p = Path(resources.temp_directory)
    if p.is_absolute():
        return p
    root = Path(getattr(data_dir, "root", data_dir)) if data_dir is not None else _current_root
    if root is None:
        return Path(tempfile.gettempdir()) / "faers-duckdb-spill"
    return root / p


def open_connection(resources: Resources | None = None, data_dir=None, *, label: str = "duckdb",
                    preserve_insertion_order: bool = True):
    """An in-memory DuckDB connection with the configured limits; close it when done.

    Its spill folder is a fresh folder under :func:`spill_dir`, removed by :func:`connect` on exit (or at the
    latest when the process exits). ``preserve_insertion_order=False`` lets DuckDB stream big unordered results
    with less memory.
    """
    return _open(resources or _current, data_dir, label, preserve_insertion_order)[0]


def _open(res: Resources, data_dir, label: str, preserve_insertion_order: bool):
    import duckdb  # lazily: the config (which holds Resources) loads without it

    # DuckDB creates only the last folder of temp_directory: make it here
    tmp = spill_dir(res, data_dir) / f"{label}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    _opened.add(tmp)
    atexit.register(_remove, tmp)
    try:
        con = duckdb.connect(config={"memory_limit": res.limit_of(label)[1], "threads": int(res.threads),
                                     "temp_directory": str(tmp),
                                     "preserve_insertion_order": bool(preserve_insertion_order)})
    except BaseException:
        _remove(tmp)
        raise
    con.execute("SET enable_progress_bar=false")
    return con, tmp


def close(con) -> None:
    """Close a connection from :func:`open_connection` and remove its spill folder."""
    try:
        tmp = Path(con.execute("SELECT current_setting('temp_directory')").fetchone()[0])
    except Exception:  # noqa: BLE001 - already closed: nothing to read, the folder goes at exit
        tmp = None
    con.close()
    if tmp is not None and tmp in _opened:
        _remove(tmp)


_opened: set[Path] = set()


def _remove(tmp: Path) -> None:
    _opened.discard(tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    with contextlib.suppress(OSError):
        tmp.parent.rmdir()  # only when empty (no other step spilling there)


@contextlib.contextmanager
def connect(resources: Resources | None = None, data_dir=None, *, label: str = "duckdb",
            preserve_insertion_order: bool = True):
    """:func:`open_connection` as a context manager: out-of-memory errors inside the block become
    :class:`ResourceError`; the connection is closed and its spill folder removed on exit."""
    res = resources or _current
    con, tmp = _open(res, data_dir, label, preserve_insertion_order)
    try:
        with translate(res, label, data_dir):
            yield con
    finally:
        con.close()
        _remove(tmp)


@contextlib.contextmanager
def translate(resources: Resources | None = None, label: str = "duckdb", data_dir=None):
    """Turn DuckDB's out-of-memory error (and Python's MemoryError) into a one-line ResourceError."""
    import duckdb

    res = resources or _current
    setting, limit = res.limit_of(label)
    try:
        yield
    except duckdb.OutOfMemoryException as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "out of memory"
        raise ResourceError(f"{label}: out of memory within {setting} = {limit!r} "
                            f"(DuckDB: {first[:160]}); raise the limit or free disk for spilling under "
                            f"{spill_dir(res, data_dir)}") from None
    except MemoryError:
        raise ResourceError(f"{label}: the process ran out of memory ({setting} = "
                            f"{limit!r}); lower the limit or free RAM") from None
