"""One quarter: every member parsed and typed by two workers, staged, validated, then published whole."""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa

from pipeline.atomic import sha256_file, write_json
from pipeline.errors import IngestError
from pipeline.ingest.parse import parse_deleted, parse_delimited
from pipeline.ingest.records import ParsedFile, QuarterResult
from pipeline.ingest.typed import finish_table
from pipeline.ingest.write import (
    TABLE_ORDER,
    check_reconciled,
    commit_stage,
    drop_staging,
    ingest_record,
    open_staging,
    write_quarantine,
    write_raw_parquet,
)
from pipeline.ingest.zips import classify_members, member_infos, read_member
from pipeline.layout import DELETED, TABLES, DataDir
from pipeline.quarters import Quarter
from pipeline.schemas import raw_schema

log = logging.getLogger("pipeline.ingest")


def parse_member(zip_path: Path, member: str, size: int, table: str, quarter: Quarter,
                 write_to: Path | None = None, on_rows=None) -> tuple[ParsedFile, pa.Table]:
    """Read, parse and type one member; optionally hand its rows on and write them.

    Parameters
    ----------
    zip_path, member : Path, str
        The landing zip and the member in it.
    size : int
        The member's declared size.
    table : str
        The FDA table it holds, or ``DELETED`` for a deleted-case list.
    quarter : Quarter
        The quarter (era and provenance of the rows).
    write_to : Path or None
        Write the typed table there as raw Parquet (the write overlaps with parsing the next member).
    on_rows : callable or None
        Called as ``on_rows(table, rows)`` before the write (validation of the rows can start meanwhile).

    Returns
    -------
    tuple of (ParsedFile, pyarrow.Table)
        The parse (record and quarantined lines) and the table of exactly ``raw_schema(table)``.

    Raises
    ------
    IngestError
        The member cannot be read (corrupt, truncated, bad CRC, wrong size) or has a wrong header.
    """
    try:
        data = read_member(zip_path, member, size)
    except (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError, RuntimeError) as exc:
        raise IngestError(f"{zip_path.name}: cannot read {member!r}: {exc}") from None
    parsed = parse_deleted(data, member) if table == DELETED else parse_delimited(data, table, member)
    del data
    tbl = finish_table(parsed, table, quarter, member)
    if on_rows is not None:
        on_rows(table, tbl)
    if write_to is not None:
        write_raw_parquet(tbl, write_to, quarter, zip_path)
    return parsed, tbl


def ingest_zip(data_dir: DataDir, zip_path: Path, quarter: Quarter, *, progress: bool = True,
               validate: bool = True, zip_sha256: str | None = None,
               quarantine_max: float | None = None) -> QuarterResult:
    """Ingest one landing zip as ``quarter``: stage everything, validate, then swap it in.

    Parameters
    ----------
    data_dir : DataDir
        The data directory.
    zip_path : Path
        The landing zip.
    quarter : Quarter
        The quarter it holds.
    progress : bool
        Show a progress bar (on a terminal).
    validate : bool
        Run the raw data checks (Great Expectations) before publishing.
    zip_sha256 : str or None
        The zip's sha256 when known (else computed).
    quarantine_max : float or None
        Critical quarantined share of a large file's data lines (config ``[thresholds] quarantine_rate_max``;
        None: the validation's default, 0.001).

    Returns
    -------
    QuarterResult

    Raises
    ------
    IngestError
        A bad zip, member or header; earlier data of the quarter is untouched.
    pipeline.quality.ValidationFailed
        A critical data check failed (its summary is kept as ``validation/raw/YYYYQn.failed.json``).
    """
    t0 = time.perf_counter()
    result = QuarterResult(quarter=quarter, zip_path=zip_path)
    infos = member_infos(zip_path)
    jobs = _jobs(zip_path, infos, result)
    # slow imports (pandas, which pyarrow.compute loads on first use, ~0.5 s; GX ~2 s) overlap with
    # inflating and parsing, which mostly run without the GIL
    _warm_imports(validate)
    staging = open_staging(data_dir, quarter)
    stage = DataDir(staging)
    bar = _progress_bar(sum(infos[m].file_size for _, m in jobs), f"ingest {quarter}", progress)
    try:
        start = (lambda: _start_validation(stage, quarter, quarantine_max)) if validate else None
        parts, quarantine_rows, validation = _parse_members(jobs, infos, zip_path, stage, result, bar, start)
        bar.close()
        held = _write_stage(stage, parts, quarantine_rows, result, zip_path, zip_sha256)
        if validate:
            result.validation = _finish_validation(validation or start(), data_dir, quarter, held[DELETED])
        del held
        commit_stage(stage, data_dir, quarter)
    finally:
        bar.close()
        drop_staging(data_dir, staging)
    result.seconds = time.perf_counter() - t0
    return result


def _jobs(zip_path: Path, infos: dict[str, zipfile.ZipInfo], result: QuarterResult) -> list[tuple[str, str]]:
    """(table, member) to parse, biggest first; unknown members recorded; a missing table raises."""
    tables, deleted, unknown = classify_members(list(infos))
    result.unknown_members = unknown
    for name in unknown:
        log.info("%s: member %s is not a FAERS table; recorded, not ingested", zip_path.name, name)
    missing = [t for t in TABLES if t not in tables]
    if missing:
        raise IngestError(f"{zip_path.name}: missing table file(s) {', '.join(missing)} "
                          f"(members: {', '.join(sorted(infos))[:300]})")
    jobs = [(t, m) for t, m in tables.items()] + [(DELETED, m) for m in deleted]
    jobs.sort(key=lambda j: -infos[j[1]].file_size)  # biggest first balances the two workers
    return jobs


def _parse_members(jobs, infos, zip_path: Path, stage: DataDir, result: QuarterResult, bar, start_validation):
    """Parse and write every member on two workers; returns (parts per table, quarantine rows, validation).

    ``start_validation()`` makes the quarter's validation when the first rows arrive (None: no validation)."""
    validate = start_validation is not None
    quarter = result.quarter
    parts: dict[str, list[tuple[str, pa.Table]]] = {}  # table -> (member, rows)
    quarantine_rows: list[tuple[str, str, int, str, int, int, bytes]] = []
    validation = None
    workers = min(2, os.cpu_count() or 1)
    # Workers post two events per member: its rows (before the Parquet write) and its end. This thread,
    # which would otherwise only wait, runs the GX suites on the rows while the workers parse and write.
    events: queue.SimpleQueue = queue.SimpleQueue()
    on_rows = (lambda table, tbl: events.put(("rows", table, tbl))) if validate else None
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {}
        for t, m in jobs:
            fut = pool.submit(parse_member, zip_path, m, infos[m].file_size, t, quarter,
                              None if t == DELETED else stage.raw_part(t, quarter),
                              None if t == DELETED else on_rows)
            futures[fut] = (t, m)
            fut.add_done_callback(lambda f: events.put(("done", f, None)))
        done = 0
        while done < len(futures):
            kind, item, rows = events.get()
            if kind == "rows":
                validation = validation or start_validation()
                validation.add_rows(item, rows)
                continue
            done += 1
            table, member = futures[item]
            parsed, tbl = item.result()
            parts.setdefault(table, []).append((member, tbl))
            result.files.append(parsed.record)
            for line, reason, exp, found, raw in parsed.quarantine:
                quarantine_rows.append((table, member, line, reason, exp, found, raw))
            bar.update(infos[member].file_size)
            _log_member(quarter, parsed)
            if validate and table != DELETED:
                validation.add_file(table)
    return parts, quarantine_rows, validation


def _log_member(quarter: Quarter, parsed: ParsedFile) -> None:
    rec = parsed.record
    log.info("%s %s: %s data lines, %s rows, %s quarantined", quarter, rec.member,
             f"{rec.data_lines:,}", f"{rec.rows_written:,}", f"{rec.quarantined:,}")


def _write_stage(stage: DataDir, parts: dict, quarantine_rows: list, result: QuarterResult, zip_path: Path,
                 zip_sha256: str | None) -> dict[str, pa.Table]:
    """Stage what the workers did not write (deleted lists, quarantine, ingest record); refuse an unreconciled file."""
    quarter = result.quarter
    held: dict[str, pa.Table] = {t: parts.pop(t)[0][1] for t in TABLES}  # one member each, written
    deleted_parts = [tbl for _, tbl in sorted(parts.pop(DELETED, []), key=lambda p: p[0])]
    held[DELETED] = pa.concat_tables(deleted_parts or [raw_schema(DELETED).empty_table()])
    write_raw_parquet(held[DELETED], stage.raw_part(DELETED, quarter), quarter, zip_path)
    write_quarantine(quarantine_rows, quarter, stage.quarantine_part(quarter))
    result.files.sort(key=lambda f: (TABLE_ORDER.index(f.table), f.member))
    record = ingest_record(result, zip_path, zip_sha256 or sha256_file(zip_path))
    write_json(record, stage.ingest_record(quarter))
    check_reconciled(result)
    return held


def _finish_validation(validation, data_dir: DataDir, quarter: Quarter, deleted: pa.Table) -> dict:
    from pipeline import quality

    try:
        validation.add(DELETED, deleted)  # several lists in one table, written just above
        return validation.finish()
    except quality.ValidationFailed as exc:
        # the quarter is not published, but the operator gets the full result to read
        write_json(exc.summary, data_dir.validation / "raw" / f"{quarter}.failed.json")
        raise


_WARMING: threading.Thread | None = None


def _start_validation(stage: DataDir, quarter: Quarter, quarantine_max: float | None = None):
    _WARMING.join()
    from pipeline import quality

    options = {} if quarantine_max is None else {"quarantine_critical": float(quarantine_max)}
    return quality.RawQuarterValidation(stage, quarter, **options)


def _warm_imports(validate: bool) -> None:
    global _WARMING

    if _WARMING is None or (validate and "great_expectations" not in sys.modules and not _WARMING.is_alive()):
        _WARMING = threading.Thread(target=_import_slow_modules, args=(validate,), name="warm-imports", daemon=True)
        _WARMING.start()


def _import_slow_modules(validate: bool) -> None:
    import pandas  # noqa: F401

    if validate:
        import great_expectations  # noqa: F401  (the slow part)

        import pipeline.quality  # noqa: F401


def _progress_bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                disable=None if enabled else True, leave=False)
