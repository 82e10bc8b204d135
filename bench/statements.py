"""Which DuckDB statements a pipeline command spends its time in.

``python -m bench.statements [--min-s 0.5] -- <pipeline arguments>`` runs the command in this process with every
connection of :mod:`pipeline.duck` watched: each statement taking at least ``--min-s`` seconds is printed to
stderr with its time, the two innermost ``pipeline/`` lines that issued it and its first 160 characters. The
step logs (``--verbose``) say which step is slow; this says which statement. Run the command under
``/usr/bin/time`` for its whole-process figures: the watching costs one clock read per statement.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback


class Watched:
    """A DuckDB connection whose ``execute`` and ``sql`` report statements slower than ``min_s`` to ``out``."""

    def __init__(self, con, min_s: float, out=None):
        self._con, self._min_s, self._out = con, min_s, out

    def __getattr__(self, name):
        return getattr(self._con, name)

    def _timed(self, method: str, query, *args, **kwargs):
        t0 = time.perf_counter()
        result = getattr(self._con, method)(query, *args, **kwargs)
        seconds = time.perf_counter() - t0
        if seconds >= self._min_s:
            frames = [f for f in traceback.extract_stack()[:-2] if "/pipeline/" in f.filename][-2:]
            where = " < ".join(f"{f.filename.rsplit('/pipeline/', 1)[1]}:{f.lineno}" for f in reversed(frames))
            text = " ".join(str(query).split())[:160]
            print(f"[sql {seconds:7.2f}s] {where or '?'} :: {text}", file=self._out or sys.stderr, flush=True)
        return result

    def execute(self, query, *args, **kwargs):
        return self._timed("execute", query, *args, **kwargs)

    def sql(self, query, *args, **kwargs):
        return self._timed("sql", query, *args, **kwargs)


def watch(min_s: float, out=None) -> None:
    """From now on, every connection :mod:`pipeline.duck` opens is :class:`Watched`."""
    from pipeline import duck

    opened = duck._open

    def _open(*args, **kwargs):
        con, tmp = opened(*args, **kwargs)
        return Watched(con, min_s, out), tmp

    duck._open = _open


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.statements", description=__doc__.splitlines()[0])
    ap.add_argument("--min-s", type=float, default=0.5, help="report statements taking at least this (0.5 s)")
    ap.add_argument("pipeline_args", nargs=argparse.REMAINDER, help="the pipeline command, after --")
    args = ap.parse_args(argv)
    rest = args.pipeline_args[1:] if args.pipeline_args[:1] == ["--"] else args.pipeline_args
    if not rest:
        ap.error("name the pipeline command after --, e.g. -- signals --data-dir DIR")
    watch(args.min_s)
    from pipeline.cli import main as pipeline_main

    return pipeline_main(rest)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
