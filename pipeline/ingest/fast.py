"""The fast parser of a `$`-delimited FDA file: Arrow checks the field counts and hands over only the bad rows.

For the usual file (no blank lines, few bad lines, non-UTF-8 bytes only here and there). Whenever the file is
not of that kind, or the counts do not add up, it declines (``None``) and the exact parser decides line by line.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.ingest.bytescan import count_bytes, transcode_invalid_lines
from pipeline.ingest.lines import (
    STYLE_SAMPLE,
    TOO_MANY_FIELDS,
    TRAILING_FIELD,
    field_count_reason,
    merge_rows,
    note_columns,
    parsed_file,
    read_dollar_table,
    read_header,
    trailing_style,
)
from pipeline.ingest.records import FileRecord, ParsedFile, QuarantinedLine

_FAST_MAX_BAD = 10_000  # beyond this many bad rows (a Python call each), the exact path is quicker
_HIGH_LIMIT = 500_000  # non-ASCII bytes beyond which looking at their lines one by one costs too much


def parse_fast(data: bytes, table: str, member: str) -> ParsedFile | None:
    """Arrow-checked parse of one FDA table file; ``None`` when the file needs the exact path.

    Parameters
    ----------
    data : bytes
        The whole file, BOM already stripped.
    table : str
        The FDA table (``DEMO``, ``DRUG``, ...).
    member : str
        The member's name, for the record and messages.

    Returns
    -------
    ParsedFile or None
    """
    names, header_trailing, body_at = read_header(data, table, member)
    if data[body_at:body_at + 1] in (b"\n", b"\r"):
        return None  # a blank first line: the exact path counts blank lines apart
    counts = count_bytes(data, body_at, high_limit=_HIGH_LIMIT)
    if counts.carriage_returns != counts.crlf:
        return None  # a lone '\r' ends a line for Arrow but not for FDA: the exact path keeps it in the field
    # Without lone '\r', Arrow's lines are the file's lines, and the only ones it drops silently are
    # blank: the count check below (rows + bad rows = lines) sends any blank line to the exact path.
    if counts.high is None:
        return None  # non-ASCII everywhere: too many lines to look at one by one
    data, originals = transcode_invalid_lines(data, counts.high)
    n_cols = len(names)
    trailing = _sampled_style(data, body_at, header_trailing, n_cols)
    parse_names = list(names) + ([TRAILING_FIELD] if trailing else [])
    read = _arrow_rows(memoryview(data)[body_at:], parse_names)
    if read is None:
        return None
    tbl, bad_rows = read
    data_lines = counts.newlines + (0 if data.endswith(b"\n") or len(data) == body_at else 1)
    n_main = tbl.num_rows if tbl is not None else 0
    if n_main + len(bad_rows) != data_lines:
        return None  # the two counts disagree: let the exact path decide line by line
    lines = np.setdiff1d(np.arange(2, data_lines + 2, dtype=np.int64),
                         np.array([ln for ln, _ in bad_rows], dtype=np.int64), assume_unique=True)
    record = FileRecord(table=table, member=member, data_lines=data_lines, trailing_dollar=trailing)
    note_columns(record, names)
    quarantine: list[QuarantinedLine] = []
    cols = {n: (tbl.column(n) if tbl is not None else pa.chunked_array([], pa.string())) for n in names}
    if trailing and n_main:
        cols, lines = _drop_embedded_dollars(tbl, cols, lines, parse_names, originals, quarantine)
    odd_lines, odd_rows = _sort_bad_rows(bad_rows, trailing, n_cols, originals, quarantine)
    quarantine.sort()
    # like the exact path, count transcoded lines only among those kept
    record.encoding_fallback_lines = len(set(originals) - {q[0] for q in quarantine})
    if odd_rows:
        cols, lines = merge_rows(cols, lines, odd_rows, odd_lines, names)
    return parsed_file(cols, lines, record, quarantine)


def _sampled_style(data: bytes, body_at: int, header_trailing: bool, n_cols: int) -> bool:
    """The trailing-'$' style from the first data lines (the first MiB of the body)."""
    chunk = data[body_at:body_at + (1 << 20)]
    sample = chunk.split(b"\n")
    if body_at + len(chunk) < len(data):
        sample.pop()  # cut mid-line
    sample = [ln.rstrip(b"\r") for ln in sample if ln.rstrip(b"\r")][:STYLE_SAMPLE]
    return trailing_style(header_trailing, np.array([ln.count(b"$") for ln in sample], dtype=np.int64),
                          np.array([ln.endswith(b"$") for ln in sample], dtype=bool), n_cols)


def _arrow_rows(body: memoryview, parse_names: list[str]):
    """(Arrow's table or ``None`` for an empty body, [(line, text) of the rows it refused]); ``None`` to decline."""
    bad_rows: list[tuple[int, str]] = []

    def on_invalid(row) -> str:
        # single-threaded parsing numbers the rows (blank lines excepted: the count check sees those)
        bad_rows.append((row.number + 1, row.text))  # the body's row 1 is the file's line 2
        return "skip" if len(bad_rows) <= _FAST_MAX_BAD else "error"

    try:
        # one thread per file (the ingest runs files side by side), which gives the row numbers
        tbl = read_dollar_table(body, parse_names, block_size=4 << 20, use_threads=False,
                                on_invalid=on_invalid) if len(body) else None
    except pa.ArrowInvalid:
        return None
    return tbl, bad_rows


def _drop_embedded_dollars(tbl: pa.Table, cols: dict, lines: np.ndarray, parse_names: list[str],
                           originals: dict[int, bytes], quarantine: list[QuarantinedLine]):
    """Quarantine the Arrow-valid rows whose extra last field is not empty: they hold an embedded '$'."""
    n_cols = len(parse_names) - 1
    extra = pc.not_equal(tbl.column(TRAILING_FIELD), "")
    if not pc.any(extra).as_py():
        return cols, lines
    idx = np.flatnonzero(extra.to_numpy(zero_copy_only=False))
    for k in idx:
        raw = "$".join(tbl.column(n)[int(k)].as_py() for n in parse_names).encode()
        quarantine.append((int(lines[k]), TOO_MANY_FIELDS, n_cols, n_cols + 1, originals.get(int(lines[k]), raw)))
    keep = pc.invert(extra)
    return {n: c.filter(keep) for n, c in cols.items()}, np.delete(lines, idx)


def _sort_bad_rows(bad_rows: list[tuple[int, str]], trailing: bool, n_cols: int, originals: dict[int, bytes],
                   quarantine: list[QuarantinedLine]) -> tuple[list[int], list[list[str]]]:
    """Arrow's refused rows: complete rows without the file's trailing '$' are kept, the rest quarantined."""
    odd_lines, odd_rows = [], []
    for line_no, text in bad_rows:
        fields = text.split("$")
        found = len(fields) - int(trailing and text.endswith("$"))
        if trailing and len(fields) == n_cols:  # a row without the file's trailing '$': complete
            odd_lines.append(line_no)
            odd_rows.append(fields)
            continue
        quarantine.append((line_no, field_count_reason(found, n_cols), n_cols, found,
                           originals.get(line_no, text.encode())))
    return odd_lines, odd_rows
