"""Writing a quarter: raw Parquet, quarantine, ingest record into a staging folder, then the atomic publish."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.atomic import write_parquet
from pipeline.errors import IngestError
from pipeline.ingest.records import QuarterResult
from pipeline.layout import DELETED, TABLES, DataDir
from pipeline.quarters import Quarter
from pipeline.schemas import QUARANTINE_SCHEMA

#: tables in the order of the ingest record's files and of the quarantine rows
TABLE_ORDER = TABLES + (DELETED,)

_DICTIONARY_SAMPLE = 65_536
_DICTIONARY_MAX_SHARE = 0.05


def write_raw_parquet(table: pa.Table, target: Path, quarter: Quarter, zip_path: Path) -> Path:
    """Write one raw table: dictionary pages only for repetitive text, statistics only for typed columns.

    A text column gets a dictionary when its first 65,536 values hold at most 5 % distinct ones (codes,
    PTs, units, provenance); identifiers and free text are written plain, where building a dictionary
    Arrow then abandons costs time and saves nothing. Min/max statistics on free text cost a third of the
    write and serve no query (readers filter on the typed ``*_int`` / ``*_date`` copies).
    """
    sample = table.slice(0, _DICTIONARY_SAMPLE)
    text = [f.name for f in table.schema if pa.types.is_string(f.type)]
    dictionary = [c for c in text if sample.num_rows == 0 or
                  pc.count_distinct(sample.column(c)).as_py() <= _DICTIONARY_MAX_SHARE * sample.num_rows]
    typed = [f.name for f in table.schema if not pa.types.is_string(f.type)]
    return write_parquet(table, target, metadata={"quarter": str(quarter), "source_zip": zip_path.name},
                         use_dictionary=dictionary, write_statistics=typed + ["quarter"])


def write_quarantine(rows: list[tuple[str, str, int, str, int, int, bytes]], quarter: Quarter, target: Path) -> Path:
    """Write a quarter's rejected lines, ``(table, member, line, reason, expected, found, raw)`` each, in file order.

    Parameters
    ----------
    rows : list of tuple
        The rejected lines of all members (sorted here: the order members finish in varies).
    quarter : Quarter
        The quarter they came from.
    target : Path
        The Parquet file (schema ``QUARANTINE_SCHEMA``).

    Returns
    -------
    Path
    """
    rows.sort(key=lambda r: (TABLE_ORDER.index(r[0]), r[1], r[2]))  # completion order varies
    qtab = pa.table({
        "quarter": [str(quarter)] * len(rows),
        "table": [r[0] for r in rows],
        "source_file": [r[1] for r in rows],
        "line_number": [r[2] for r in rows],
        "reason": [r[3] for r in rows],
        "expected_fields": [r[4] for r in rows],
        "found_fields": [r[5] for r in rows],
        "raw": [r[6] for r in rows],
    }, schema=QUARANTINE_SCHEMA)
    return write_parquet(qtab, target)


def ingest_record(result: QuarterResult, zip_path: Path, sha: str) -> dict:
    """The ingest record of a quarter (``raw/_ingest/YYYYQn.json``).

    Parameters
    ----------
    result : QuarterResult
        The quarter's files, in record order.
    zip_path : Path
        The landing zip it came from.
    sha : str
        That zip's sha256.

    Returns
    -------
    dict
    """
    return {
        "quarter": str(result.quarter),
        "era": result.quarter.era,
        "zip": zip_path.name,
        "zip_sha256": sha,
        "ingested_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "files": [{**f.__dict__, "reconciled": f.reconciled} for f in result.files],
        "unknown_members": result.unknown_members,
        "reconciled": all(f.reconciled for f in result.files),
        "rows": result.rows,
        "quarantined": result.quarantined,
    }


def check_reconciled(result: QuarterResult) -> None:
    """Refuse a quarter where a file's data lines are not its rows plus its quarantined lines."""
    unreconciled = [f for f in result.files if not f.reconciled]
    if unreconciled:  # cannot happen unless the parser is wrong; never publish such a quarter
        f = unreconciled[0]
        raise IngestError(f"{result.quarter} {f.member}: {f.data_lines} data lines but {f.rows_written} rows "
                          f"+ {f.quarantined} quarantined")


def open_staging(data_dir: DataDir, quarter: Quarter) -> Path:
    """An empty staging folder for ``quarter`` (what a crashed run left there is removed)."""
    staging = data_dir.root / ".staging" / str(quarter)
    shutil.rmtree(staging, ignore_errors=True)
    return staging


def drop_staging(data_dir: DataDir, staging: Path) -> None:
    """Remove a staging folder, and the staging root when no other quarter is staged."""
    shutil.rmtree(staging, ignore_errors=True)
    try:
        (data_dir.root / ".staging").rmdir()
    except OSError:
        pass


def commit_stage(stage: DataDir, data_dir: DataDir, quarter: Quarter) -> None:
    """Move the staged quarter into place; the ingest record goes last (it marks completion)."""
    moves = [(stage.raw_part(t, quarter), data_dir.raw_part(t, quarter)) for t in TABLE_ORDER]
    moves.append((stage.quarantine_part(quarter), data_dir.quarantine_part(quarter)))
    staged_validation = stage.validation / "raw"
    if staged_validation.is_dir():
        for p in staged_validation.iterdir():
            moves.append((p, data_dir.validation / "raw" / p.name))
    for src, dst in moves:
        if src.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
    (data_dir.validation / "raw" / f"{quarter}.failed.json").unlink(missing_ok=True)
    dst = data_dir.ingest_record(quarter)
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(stage.ingest_record(quarter), dst)
