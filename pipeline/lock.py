"""The data-directory lock: one writer at a time, whether it is the CLI or an Airflow task.

``DIR/.pipeline.lock`` is locked with ``flock(2)``. The kernel drops the lock when its holder exits for any reason,
SIGKILL included, so a crashed run never leaves a stale lock behind and there is nothing to clean up by hand.

* Commands that write (``fetch``, ``ingest``, ``curate``, ``signals``, ``run``, ``demo``) take it **exclusively**.
  A second one refuses at once with one line and exit code 75 (``EX_TEMPFAIL``: try again later), or waits
  for the first with ``--wait``.
* Airflow's per-quarter tasks (fetch, ingest) take it **shared**, plus an exclusive lock of their own quarter, so the
  mapped quarters of one run go on in parallel on several workers while a CLI run, curation or a report (exclusive)
  keeps them out. Airflow tasks always wait: a task that refused would only fail and be retried.

Whoever takes the lock exclusively first removes what a crashed writer left behind (:func:`sweep_debris`): with
the lock held nobody else is writing, so every staging folder and half-written ``*.tmp`` is debris; published files
are only ever replaced by a rename, so none of them can be half-written.

The holder writes its pid, host, command and start time into the lock file, so whoever is refused is told who holds
it. ``flock`` locks are per open file; a process takes the same lock again (nested runner steps) without
blocking itself.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

from pipeline.errors import DataDirBusy
from pipeline.layout import DataDir

log = logging.getLogger(__name__)

LOCK_NAME = ".pipeline.lock"
QUARTER_LOCKS = ".locks"
#: names of unfinished work: atomic_path/atomic_dir temporaries (".<name>.<random>.tmp"), the old folder an
#: interrupted swap left (".<name>.old-<pid>"), ingest and report staging, DuckDB spill folders of curation
DEBRIS = re.compile(r"^\..+\.tmp$|^\..+\.old-\d+$|^\.staging$|^\.reports-staging$|^\.curate-spill-")

# path -> [fd, depth, mode]: re-entry within one process (runner.run calls the other steps)
_held: dict[str, list] = {}
_guard = threading.RLock()


def lock_path(data_dir: DataDir) -> Path:
    return data_dir.root / LOCK_NAME


def holder(path: Path) -> dict:
    """What the current holder wrote into the lock file (empty when unknown)."""
    try:
        return json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(info: dict) -> str:
    if not info:
        return "another run (an Airflow task or a command)"
    bits = [f"pid {info.get('pid')}"]
    if info.get("host") and info.get("host") != socket.gethostname():
        bits.append(f"on {info['host']}")
    if info.get("command"):
        bits.append(f"`{info['command']}`")
    if info.get("since"):
        bits.append(f"since {info['since']}")
    return " ".join(bits)


@contextlib.contextmanager
def _flock(path: Path, *, shared: bool, wait: bool, what: str, timeout: float | None = None,
           command: str | None = None) -> Iterator[None]:
    key = str(path)
    with _guard:
        entry = _held.get(key)
        if entry is not None and (entry[2] == "ex" or shared):
            entry[1] += 1  # already held strongly enough by this process
            try:
                yield
            finally:
                entry[1] -= 1
            return
        if entry is not None:
            raise RuntimeError(f"{what}: cannot upgrade a shared lock held by this process to an exclusive one")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            info = holder(path)
            if not wait:
                raise DataDirBusy(f"{what} is in use by {_describe(info)}; "
                                  f"not starting a second run on it (wait for it with --wait)") from None
            log.warning("waiting for %s, in use by %s", what, _describe(info))
            _wait(fd, mode, what, timeout, info)
        if not shared and path.name == LOCK_NAME:
            sweep_debris(path.parent)
        if not shared:  # an exclusive holder says who it is; shared holders leave the file alone
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps({
                "pid": os.getpid(), "host": socket.gethostname(),
                "command": command or " ".join(["pipeline", *sys.argv[1:]])[:200],
                "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}) + "\n").encode(), 0)
        with _guard:
            _held[key] = [fd, 1, "sh" if shared else "ex"]
        try:
            yield
        finally:
            with _guard:
                del _held[key]
            if not shared:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


def _wait(fd: int, mode: int, what: str, timeout: float | None, info: dict) -> None:
    if timeout is None:
        fcntl.flock(fd, mode)
        return
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
        if time.monotonic() >= deadline:
            raise DataDirBusy(f"{what} is still in use by {_describe(info)} after {timeout:g} s")
        time.sleep(0.2)


def sweep_debris(root: Path) -> list[str]:
    """Remove what interrupted writers left under ``root`` (call only with the exclusive lock held)."""
    removed = []
    for folder, dirs, files in os.walk(root):
        for name in list(dirs):
            if DEBRIS.match(name):
                shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
                dirs.remove(name)
                removed.append(os.path.join(folder, name))
        for name in files:
            if DEBRIS.match(name):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(folder, name))
                removed.append(os.path.join(folder, name))
    if removed:
        log.warning("removed %d leftover(s) of an interrupted run in %s: %s", len(removed), root,
                    ", ".join(os.path.relpath(r, root) for r in removed[:5]) + (" ..." if len(removed) > 5 else ""))
    return removed


def data_dir_lock(data_dir: DataDir, *, shared: bool = False, wait: bool = False, timeout: float | None = None,
                  command: str | None = None):
    """Hold the lock of ``data_dir`` (exclusive by default); raise :class:`DataDirBusy` if taken and not ``wait``."""
    return _flock(lock_path(data_dir), shared=shared, wait=wait, timeout=timeout, command=command,
                  what=f"data directory {data_dir.root}")


@contextlib.contextmanager
def quarter_lock(data_dir: DataDir, quarter: str, *, wait: bool = True, timeout: float | None = None,
                 command: str | None = None) -> Iterator[None]:
    """Shared data-dir lock plus an exclusive lock of one quarter (Airflow's parallel per-quarter tasks)."""
    with data_dir_lock(data_dir, shared=True, wait=wait, timeout=timeout, command=command):
        with _flock(data_dir.root / QUARTER_LOCKS / f"{quarter}.lock", shared=False, wait=wait, timeout=timeout,
                    command=command, what=f"quarter {quarter} of {data_dir.root}"):
            yield
