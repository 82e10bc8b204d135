"""Line rules shared by both parsers of a `$`-delimited FDA file: header, trailing-'$' style, rejects, rows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from pipeline.errors import IngestError
from pipeline.ingest.records import FileRecord, ParsedFile, QuarantinedLine
from pipeline.schemas import HEADER_ALIASES, REQUIRED_COLUMNS, TABLE_ALIASES, TEXT_COLUMNS

BOM = b"\xef\xbb\xbf"

#: data lines that decide a file's trailing-'$' style (both parsers use the same ones)
STYLE_SAMPLE = 1000

TOO_MANY_FIELDS = "too many fields (glued records or an embedded '$')"
TOO_FEW_FIELDS = "too few fields (truncated or split record)"

#: the name of the empty field after a trailing '$' when Arrow reads such a file
TRAILING_FIELD = "__trailing__"


def field_count_reason(found: int, n_cols: int) -> str:
    """The quarantine reason of a line with ``found`` fields where the header has ``n_cols``."""
    return TOO_MANY_FIELDS if found > n_cols else TOO_FEW_FIELDS


def read_header(data: bytes, table: str, member: str) -> tuple[list[str], bool, int]:
    """Canonical column names of a file, whether its header ends in '$', and where its data begin.

    Parameters
    ----------
    data : bytes
        The whole file, BOM already stripped.
    table : str
        The FDA table (``DEMO``, ``DRUG``, ...): picks the header aliases and the required columns.
    member : str
        The member's name, for messages.

    Returns
    -------
    tuple of (list of str, bool, int)
        Names after the documented aliases, header ends in '$', offset of the first data line.

    Raises
    ------
    IngestError
        An empty file, or a header with duplicated or missing required columns.
    """
    end = data.find(b"\n")
    first = data[: end if end >= 0 else len(data)].rstrip(b"\r")
    if not first.strip():
        raise IngestError(f"{member}: empty file (no header line)")
    tokens = first.decode("utf-8", errors="replace").split("$")
    header_trailing = len(tokens) > 1 and tokens[-1].strip() == ""
    if header_trailing:
        tokens = tokens[:-1]
    names = _normalise_header(tokens, table)
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise IngestError(f"{member}: wrong header: duplicated column(s) {', '.join(dup)}")
    missing_required = [c for c in REQUIRED_COLUMNS[table] if c not in names]
    if missing_required:
        raise IngestError(f"{member}: wrong header: missing column(s) {', '.join(missing_required)} "
                          f"(found: {'$'.join(tokens)[:200]})")
    return names, header_trailing, (end + 1 if end >= 0 else len(data))


def _normalise_header(tokens: list[str], table: str) -> list[str]:
    names = []
    per_table = TABLE_ALIASES.get(table, {})
    for tok in tokens:
        key = tok.replace("\ufeff", "").strip().lower()
        key = per_table.get(key, HEADER_ALIASES.get(key, key))
        names.append(key)
    return names


def note_columns(record: FileRecord, names: list[str]) -> None:
    """Record which canonical columns the file lacks and which of its columns are not canonical."""
    canonical = TEXT_COLUMNS[record.table]
    record.columns_missing = [c for c in canonical if c not in names]
    record.columns_unknown = [n for n in names if n not in canonical]


def trailing_style(header_trailing: bool, delims: np.ndarray, ends_dollar: np.ndarray, n_cols: int) -> bool:
    """Does the file end data rows with an extra '$' (LAERS)? FAERS-era files do not.

    Decided by which of the two acceptable shapes is more common among the first data lines, so a
    single embedded '$' in a file without the convention is never taken for it.

    Parameters
    ----------
    header_trailing : bool
        The header line ends in '$' (then the data lines do too).
    delims, ends_dollar : numpy.ndarray
        Per sampled data line: its count of '$', and whether it ends in '$'.
    n_cols : int
        Fields in the header.

    Returns
    -------
    bool
    """
    plus_one = np.count_nonzero(ends_dollar & (delims == n_cols))
    exact = np.count_nonzero(delims == n_cols - 1)
    return bool(header_trailing or plus_one > exact)


def decode_fallback(line: bytes) -> bytes:
    """A line that is not UTF-8, re-encoded to UTF-8 from cp1252 (latin-1 where cp1252 has no character)."""
    try:
        return line.decode("cp1252").encode("utf-8")
    except UnicodeDecodeError:  # 0x81, 0x8d, 0x8f, 0x90, 0x9d are undefined in cp1252
        return line.decode("latin-1").encode("utf-8")


def read_dollar_table(body, parse_names: list[str], *, block_size: int, use_threads: bool = True,
                      on_invalid=None) -> pa.Table:
    """Arrow's read of `$`-separated lines as text: no quoting, no escapes, blank lines skipped.

    Parameters
    ----------
    body : bytes or memoryview
        The data lines (no header).
    parse_names : list of str
        One name per field (``TRAILING_FIELD`` last for a file that ends lines in '$').
    block_size : int
        Arrow's block size in bytes.
    use_threads : bool
        Let Arrow parse blocks in parallel (then rows are not numbered for ``on_invalid``).
    on_invalid : callable or None
        Arrow's ``invalid_row_handler`` for lines with another field count; ``None`` raises on them.

    Returns
    -------
    pyarrow.Table
    """
    return pacsv.read_csv(
        pa.py_buffer(body),
        read_options=pacsv.ReadOptions(column_names=parse_names, block_size=block_size, use_threads=use_threads),
        parse_options=pacsv.ParseOptions(delimiter="$", quote_char=False, escape_char=False,
                                          newlines_in_values=False, ignore_empty_lines=True,
                                          invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in parse_names},
                                             strings_can_be_null=False, check_utf8=False),
    )


def constant_string(value: str, n: int) -> pa.Array:
    """A string array of ``n`` copies of ``value`` without building n Python objects."""
    raw = value.encode()
    offsets = np.arange(n + 1, dtype=np.int32) * len(raw)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(raw * n))


def _chunks(col) -> list[pa.Array]:
    return col.chunks if isinstance(col, pa.ChunkedArray) else [col]


def merge_rows(cols: dict, lines: np.ndarray, odd_rows: list[list[str]], odd_lines, names: list[str]):
    """Add rows rebuilt in Python (``odd_rows`` at ``odd_lines``) to Arrow's, back in file order.

    Parameters
    ----------
    cols : dict of str to pyarrow.Array or pyarrow.ChunkedArray
        Arrow's columns, one row per entry of ``lines``.
    lines : numpy.ndarray
        Line number of each of those rows.
    odd_rows : list of list of str
        The other rows, one text per name.
    odd_lines : sequence of int
        Their line numbers.
    names : list of str
        The columns to merge.

    Returns
    -------
    tuple of (dict of str to pyarrow.ChunkedArray, numpy.ndarray)
        The merged columns and their line numbers, sorted by line.
    """
    odd = {n: pa.array([r[i] for r in odd_rows], pa.string()) for i, n in enumerate(names)}
    all_lines = np.concatenate((lines, np.asarray(odd_lines, dtype=np.int64)))
    order = np.argsort(all_lines, kind="stable")
    taken = pa.array(order)
    merged = {n: pa.chunked_array([*_chunks(cols[n]), odd[n]], pa.string()).take(taken) for n in names}
    return merged, all_lines[order]


def parsed_file(cols: dict, lines: np.ndarray, record: FileRecord, quarantine: list[QuarantinedLine]) -> ParsedFile:
    """The parse of one file: its canonical text columns (absent ones empty) and its final counts."""
    n_rows = len(lines)
    empty = constant_string("", n_rows)
    out = {c: (cols[c] if c in cols else empty) for c in TEXT_COLUMNS[record.table]}
    record.rows_written = n_rows
    record.quarantined = len(quarantine)
    return ParsedFile(pa.table(out), lines.astype(np.int64), record, quarantine)
