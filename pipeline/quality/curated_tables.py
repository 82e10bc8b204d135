"""One curated table's suite: on the table in parts of whole reports, and the big tables in worker processes.

GX's pandas engine computes in one thread, and curation has finished when validation starts, so one core would
sit idle: the tables' suites run in up to two spawned processes, each with its own GX context, once this process
has made the cross-table checks and let their columns go (at full scale the two workers hold 2.5-3.3 GB each; this
process overlapping them reached 8.2 GB in all). Small curated folders (tests, the demo) stay in this process,
where a worker's start (about 3 s of imports) would cost more than it saves.
"""

from __future__ import annotations

import importlib
import itertools
import logging
import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import PipelineError
from pipeline.layout import DataDir
from pipeline.memory import release_memory
from pipeline.quality.checks import CRITICAL, Check, fmt_count, named_check
from pipeline.quality.gx import GxRun, checks_from_result, to_pandas
from pipeline.quality.suites import load_suite, split_structural, suite_columns

LAYER, SCOPE, RUN_NAME = "curated", "", "curated"
#: rows per GX run: a bigger table is validated in parts of whole reports (report_id bits), since GX's pandas
#: engine needs several times a frame's size (the whole history's tables needed more than 21 GB at once). Every
#: uniqueness expectation of these suites includes report_id, so a duplicate is always inside one part.
CHUNK_ROWS = 2_000_000
#: rows (summed over the tables) from which the suites run in worker processes
PARALLEL_MIN_ROWS = 20_000_000


@dataclass(frozen=True)
class TableJob:
    """The suite ``suite`` on the ``columns`` of ``curated/<name>.parquet``."""

    name: str
    suite: str
    columns: tuple[str, ...]


def read_table(data_dir: DataDir, name: str, columns, text_as_dictionary: bool = False
               ) -> tuple[pa.Table, pa.Schema | None]:
    """The ``columns`` the file has of ``curated/<name>.parquet`` and the file's schema (``None``: no file, and
    an empty table of null columns); ``text_as_dictionary``: text columns as dictionaries (see :func:`_plain`)."""
    path = data_dir.curated / f"{name}.parquet"
    if not path.exists():
        return pa.table({c: pa.array([], pa.null()) for c in columns}), None
    schema = pq.read_schema(path)
    present = [c for c in columns if c in schema.names]
    text = [c for c in present if pa.types.is_string(schema.field(c).type)] if text_as_dictionary else []
    return pq.read_table(path, columns=present, read_dictionary=text), schema


def _plain(t: pa.Table) -> pa.Table:
    """``t`` with its dictionary columns decoded: a table is held as dictionaries (the whole history's ingredient
    and PT tables took 3-4 GB as plain text) and each part decoded before GX sees it, so GX's frames and results
    are those of plain text."""
    if not any(pa.types.is_dictionary(f.type) for f in t.schema):
        return t
    return t.cast(pa.schema([pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type,
                                      f.nullable) for f in t.schema]))


def merge(a: Check, b: Check) -> Check:
    """One expectation's checks on two parts of a table as one check on both."""
    a.success = a.success and b.success
    if a.unexpected_count is not None or b.unexpected_count is not None:
        a.unexpected_count = (a.unexpected_count or 0) + (b.unexpected_count or 0)
        a.element_count = (a.element_count or 0) + (b.element_count or 0)
        a.unexpected_percent = 100.0 * a.unexpected_count / a.element_count if a.element_count else None
    a.examples = (a.examples + [x for x in b.examples if x not in a.examples])[:20]
    a.details = a.details or b.details
    return a


def column_set_checks(gxr: GxRun, name: str, schema: pa.Schema | None, col_suite: dict) -> list[Check]:
    """The column-set expectations on an empty frame of the file's schema (none without a file)."""
    if not col_suite["expectations"] or schema is None:
        return []
    res = gxr.run(col_suite, schema.empty_table().to_pandas(), asset=f"curated_{name}_columns", params={},
                  run_name=RUN_NAME, persist=False)
    return checks_from_result(res, layer=LAYER, table=name, scope=SCOPE, suite=col_suite)


def frame_checks(gxr: GxRun, name: str, df, schema: pa.Schema | None, suite: dict, params: dict | None = None,
                 index=None) -> list[Check]:
    """The table's data suite on the pandas frame ``df``, then its column-set suite."""
    data_suite, col_suite = split_structural(suite)
    res = gxr.run(data_suite, df, asset=f"curated_{name}", params=params or {}, run_name=RUN_NAME,
                  index_columns=index)
    return (checks_from_result(res, layer=LAYER, table=name, scope=SCOPE, suite=data_suite)
            + column_set_checks(gxr, name, schema, col_suite))


def table_checks(gxr: GxRun, name: str, table: pa.Table, schema: pa.Schema | None, suite: dict,
                 chunk_rows: int | None = None) -> list[Check]:
    """:func:`frame_checks` on ``table`` in parts of at most about ``chunk_rows`` rows (``None``:
    :data:`CHUNK_ROWS`), the checks merged (counts summed, examples from the first parts); the row count is
    checked on the whole table."""
    chunk_rows = chunk_rows or CHUNK_ROWS
    cols = suite_columns(suite)
    if table.num_rows <= chunk_rows or "report_id" not in table.column_names:
        return frame_checks(gxr, name, to_pandas(_plain(table), cols), schema, suite)
    parts = 1 << math.ceil(math.log2(table.num_rows / chunk_rows))
    data_suite, col_suite = split_structural(suite)
    counts = [e for e in data_suite["expectations"] if e["type"] == "expect_table_row_count_to_be_between"]
    rows_suite = {**data_suite, "expectations": [e for e in data_suite["expectations"] if e not in counts]}
    # the part of each row as a small integer, chunk by chunk, and each part's mask only while it is validated:
    # an int64 key and all masks at once held 1.1 GB beside the whole history's 70 M ingredient rows
    rid, small = table.column("report_id"), pa.uint16() if parts <= 1 << 16 else pa.int64()
    key = pa.chunked_array([pc.cast(pc.bit_wise_and(c, parts - 1), small) for c in rid.chunks], small)
    masks = (pc.fill_null(pc.equal(key, i), False) for i in range(parts))
    if rid.null_count:  # rows no part holds: the not-null check names them
        masks = itertools.chain(masks, [pc.is_null(rid)])
    merged: list[Check] = []
    for mask in masks:
        res = gxr.run(rows_suite, to_pandas(_plain(table.filter(mask)), cols), asset=f"curated_{name}", params={},
                      run_name=RUN_NAME)
        got = checks_from_result(res, layer=LAYER, table=name, scope=SCOPE, suite=rows_suite)
        merged = got if not merged else [merge(a, b) for a, b in zip(merged, got)]
    for e in counts:
        lo, hi = e["kwargs"].get("min_value"), e["kwargs"].get("max_value")
        ok = (lo is None or table.num_rows >= lo) and (hi is None or table.num_rows <= hi)
        c = named_check(LAYER, name, SCOPE, e["type"], e.get("severity", CRITICAL), ok, observed=table.num_rows,
                        notes=(e.get("meta") or {}).get("notes", ""))
        c.suite, c.kwargs = suite["name"], dict(e["kwargs"])
        if not ok:
            c.details = f"observed {table.num_rows:,} rows, expected {fmt_count(lo)}..{fmt_count(hi)}"
        merged.append(c)
    return merged + column_set_checks(gxr, name, schema, col_suite)


def run_job(root: str, job: TableJob, docs_dir: str, chunk_rows: int) -> tuple[list[Check], dict[str, dict]]:
    """One table's checks, and the suites whose results went to the GX result store (for Data Docs)."""
    table, schema = read_table(DataDir(Path(root)), job.name, job.columns, text_as_dictionary=True)
    gxr = GxRun(Path(docs_dir))
    checks = table_checks(gxr, job.name, table, schema, load_suite(job.suite), chunk_rows)
    return checks, gxr.suites


def workers_setting() -> int | None:
    """``FAERS_VALIDATION_WORKERS`` as a number (``None`` when unset); read before curation starts, so a bad value
    stops the command before any work."""
    env = os.environ.get("FAERS_VALIDATION_WORKERS", "").strip()
    if env and not env.isdigit():
        raise PipelineError(f"FAERS_VALIDATION_WORKERS must be a whole number >= 0, not {env!r}")
    return int(env) if env else None


def workers_for(rows: int) -> int:
    """Worker processes for tables of ``rows`` rows in all: 0 (this process) below :data:`PARALLEL_MIN_ROWS`,
    inside a daemonic process (which may not start children), or with ``FAERS_VALIDATION_WORKERS=0``."""
    setting = workers_setting()
    if setting is not None:
        return setting
    if rows < PARALLEL_MIN_ROWS or multiprocessing.current_process().daemon:
        return 0
    return min(2, os.cpu_count() or 1)


def _start_worker() -> None:
    """A worker's start: quiet logs, and GX imported while this process still reads (about 3 s)."""
    logging.getLogger().setLevel(logging.WARNING)
    importlib.import_module("great_expectations")


class Jobs:
    """Table jobs in ``workers`` processes (0: one by one in this process, when their checks are asked for).

    The processes start (and import GX) at once; the jobs only on :meth:`start`, so the caller can first finish
    its own reading and let it go: a worker holds a whole table (2-3 GB for the whole history's biggest).
    """

    def __init__(self, data_dir: DataDir, jobs: list[TableJob], docs_dir: Path, gxr: GxRun, workers: int,
                 chunk_rows: int | None = None):
        self.data_dir, self.gxr, self.pool, self.futures = data_dir, gxr, None, {}
        self.args = (str(data_dir.root), str(docs_dir), chunk_rows or CHUNK_ROWS)
        self.jobs = {j.name: j for j in jobs}
        if workers and jobs:
            n = min(workers, len(jobs))
            self.pool = ProcessPoolExecutor(max_workers=n, initializer=_start_worker,
                                            mp_context=multiprocessing.get_context("spawn"))
            for _ in range(n):  # one process is spawned per submission while none is idle
                self.pool.submit(int)

    def start(self) -> None:
        """Hand the jobs to the workers, biggest first (which balances them)."""
        if self.pool is None:
            return
        size = {name: _size(self.data_dir, j) for name, j in self.jobs.items()}
        for name in sorted(self.jobs, key=lambda n: -size[n]):
            self.futures[name] = self.pool.submit(run_job, self.args[0], self.jobs[name], *self.args[1:])

    def checks(self, name: str) -> list[Check]:
        """The checks of table ``name`` (waits for its worker)."""
        root, docs_dir, chunk_rows = self.args
        if self.pool is None:
            checks, suites = run_job(root, self.jobs[name], docs_dir, chunk_rows)
        else:
            try:
                checks, suites = self.futures.pop(name).result()
            except BrokenProcessPool:  # a worker was killed (out of memory?): one line, not a traceback
                raise PipelineError(f"curated validation: a worker process died while {name} was validated; "
                                    f"FAERS_VALIDATION_WORKERS=0 validates in one process") from None
        self.gxr.adopt(suites)
        return checks

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _size(data_dir: DataDir, job: TableJob) -> int:
    """Rows x columns read: what a job's time grows with."""
    path = data_dir.curated / f"{job.name}.parquet"
    return pq.read_metadata(path).num_rows * len(job.columns) if path.exists() else 0
