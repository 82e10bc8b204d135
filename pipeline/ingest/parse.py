"""Parsing one member: a `$`-delimited FDA table (fast parser, else the exact one) or a deleted-case list."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa

from pipeline.ingest.exact import parse_exact
from pipeline.ingest.fast import parse_fast
from pipeline.ingest.lines import BOM
from pipeline.ingest.records import FileRecord, ParsedFile
from pipeline.layout import DELETED


def parse_delimited(data: bytes, table: str, member: str) -> ParsedFile:
    """Parse one FDA table file (bytes) into text columns, quarantining malformed lines.

    Two implementations of the same rules: a fast one for the usual file (no blank lines, few bad
    lines, non-UTF-8 bytes only here and there), where Arrow's parser checks the field counts and
    hands over only the bad rows, and an exact line-by-line one (numpy) for everything else. A
    property test checks that both give the same result.
    """
    if data.startswith(BOM):
        data = data[len(BOM):]
    return parse_fast(data, table, member) or parse_exact(data, table, member)


def parse_deleted(data: bytes, member: str) -> ParsedFile:
    """Deleted-case lists: one caseid per line; a header line is tolerated, junk is quarantined."""
    record = FileRecord(table=DELETED, member=member)
    if data.startswith(BOM):
        data = data[len(BOM):]
    text_lines = data.split(b"\n")
    if text_lines and text_lines[-1] == b"":
        text_lines.pop()
    ids, lines, quarantine = [], [], []
    for i, raw in enumerate(text_lines, start=1):
        line = raw.rstrip(b"\r").strip().rstrip(b"$").strip()
        if not line:
            record.blank_lines += 1
            continue
        if line.isdigit():
            record.data_lines += 1
            ids.append(line.decode("ascii"))
            lines.append(i)
        elif i == 1 and re.match(rb"(?i)^[a-z_ ]+$", line):
            continue  # a header such as "caseid"
        else:
            record.data_lines += 1
            quarantine.append((i, "not a case number", 1, 1, raw))
    record.rows_written = len(ids)
    record.quarantined = len(quarantine)
    return ParsedFile(pa.table({"caseid": pa.array(ids, pa.string())}), np.array(lines, dtype=np.int64),
                      record, quarantine)
