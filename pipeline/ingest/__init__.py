"""Ingest: landing zips -> canonical raw Parquet tables, one file per table per quarter.

Rules:

* Members are matched case-insensitively (``ascii/`` or ``ASCII/``, ``.txt`` or ``.TXT``, ``_new``
  files); any ``.txt`` whose path contains ``delet`` is a deleted-case list; every other member is
  logged as unknown in the ingest record, never silently skipped.
* Every field is text: split on ``$`` with no quoting; BOM and ``\\r`` stripped; columns chosen by
  normalised header name through the documented aliases, never by position.
* FDA ends every line with ``$`` (header included in the FAERS eras, data rows only in LAERS). A line
  is accepted when it has exactly the header's field count, or one more field that is empty at the
  end of a line ending in ``$`` in a file written that way. Anything else - glued records, embedded
  ``$``, whitespace-only lines - goes to quarantine with file, line number and raw bytes.
* Non-UTF-8 bytes: the line is decoded as cp1252 (latin-1 for the 5 undefined bytes) and the count of
  such lines is recorded.
* Reconciliation, the first data-quality check: for every file, data lines = rows written + lines
  quarantined (blank lines are counted apart).
* A quarter is staged completely (all tables, quarantine, validation) before it replaces the
  previous version of that quarter, so a failure leaves earlier data untouched; the ingest record
  ``raw/_ingest/YYYYQn.json`` is written last.

Modules: ``zips`` (landing zips, members, reading one), ``lines``, ``bytescan``, ``fast``, ``exact`` and
``parse`` (parsing one member), ``typed`` (typed copies and provenance), ``write`` (raw Parquet, quarantine,
ingest record, staging and publish), ``quarter`` (one quarter), ``run`` (every landing quarter).
"""

from __future__ import annotations

from pipeline.ingest.parse import parse_deleted, parse_delimited
from pipeline.ingest.quarter import ingest_zip, parse_member
from pipeline.ingest.records import FileRecord, ParsedFile, QuarterResult
from pipeline.ingest.run import ingest, is_ingested, landing_zips
from pipeline.ingest.typed import finish_table
from pipeline.ingest.write import write_raw_parquet
from pipeline.ingest.zips import (
    DATA_MEMBER,
    MAX_COMPRESSION_RATIO,
    MAX_UNZIPPED_BYTES,
    ZIP_NAME,
    classify_members,
    quarter_of_zip,
    read_member,
)

__all__ = [
    "DATA_MEMBER",
    "MAX_COMPRESSION_RATIO",
    "MAX_UNZIPPED_BYTES",
    "ZIP_NAME",
    "FileRecord",
    "ParsedFile",
    "QuarterResult",
    "classify_members",
    "finish_table",
    "ingest",
    "ingest_zip",
    "is_ingested",
    "landing_zips",
    "parse_deleted",
    "parse_delimited",
    "parse_member",
    "quarter_of_zip",
    "read_member",
    "write_raw_parquet",
]
