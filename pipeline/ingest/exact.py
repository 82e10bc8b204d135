"""The exact parser of a `$`-delimited FDA file: numpy over the whole buffer, one decision per line.

Handles what the fast parser declines: blank lines, per-line encodings, lone '\\r' inside fields, any number
of bad lines. The majority shape still goes through Arrow straight from the bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline.errors import IngestError
from pipeline.ingest import lines as rules
from pipeline.ingest.records import FileRecord, ParsedFile, QuarantinedLine


@dataclass
class _DataLines:
    """Per data line (the header excluded): its span, number, shape and verdict."""

    s: np.ndarray             # start offset
    e: np.ndarray             # end offset, without '\n' and a '\r' before it
    line_no: np.ndarray       # 1-based line number in the file
    delims: np.ndarray        # count of '$'
    ends_dollar: np.ndarray   # ends in '$'
    blank: np.ndarray
    trailing: bool            # the file ends data lines with an extra '$'
    main: np.ndarray          # the file's usual shape
    ok: np.ndarray            # either acceptable shape


def parse_exact(data: bytes, table: str, member: str) -> ParsedFile:
    """Line-by-line parse of one FDA table file: blank lines, per-line encodings, any number of bad lines.

    Parameters
    ----------
    data : bytes
        File content without its BOM.
    table : str
        Which FDA table the file holds (picks the columns).
    member : str
        Its path in the zip (recorded, and named in errors).

    Returns
    -------
    ParsedFile

    Raises
    ------
    IngestError
        An empty file or a wrong header.
    """
    record = FileRecord(table=table, member=member)
    buf = np.frombuffer(data, dtype=np.uint8)
    starts, ends = _line_spans(buf, member)
    names, header_trailing, _ = rules.read_header(data, table, member)
    rules.note_columns(record, names)
    n_cols = len(names)
    dl = _classify(buf, starts[1:], ends[1:], n_cols, header_trailing)
    record.trailing_dollar = dl.trailing
    record.blank_lines = int(np.count_nonzero(dl.blank))
    record.data_lines = int(np.count_nonzero(~dl.blank))
    quarantine = _bad_lines(data, dl, n_cols)
    fallback = _fallback_lines(data, buf, dl)
    record.encoding_fallback_lines = len(fallback)
    main_idx, odd_idx = _split_main_and_odd(buf, dl, fallback)
    whole = len(main_idx) == record.data_lines and record.blank_lines == 0
    cols = _read_main(_main_body(data, buf, dl, main_idx, whole), names, dl.trailing, len(main_idx), member)
    lines = dl.line_no[main_idx]
    if len(odd_idx):
        odd_rows = []
        for k in odd_idx:
            raw = fallback.get(int(k)) or data[dl.s[k]:dl.e[k]]
            odd_rows.append(raw.decode("utf-8", errors="replace").split("$")[:n_cols])
        cols, lines = rules.merge_rows(cols, lines, odd_rows, dl.line_no[odd_idx], names)
    return rules.parsed_file(cols, lines, record, quarantine)


def _line_spans(buf: np.ndarray, member: str) -> tuple[np.ndarray, np.ndarray]:
    """Line k spans ``[starts[k], ends[k])`` without its '\\n' and the '\\r' before it."""
    nl = np.flatnonzero(buf == 0x0A)
    starts = np.concatenate(([0], nl + 1))
    ends = np.concatenate((nl, [len(buf)]))
    if len(starts) and starts[-1] == len(buf):  # file ends with '\n': no last partial line
        starts, ends = starts[:-1], ends[:-1]
    if len(starts) == 0:
        raise IngestError(f"{member}: empty file (no header line)")
    # strip '\r' of CRLF endings (and of a lone trailing '\r')
    cr = (ends > starts) & (buf[np.maximum(ends - 1, 0)] == 0x0D)
    return starts, ends - cr


def _classify(buf: np.ndarray, s: np.ndarray, e: np.ndarray, n_cols: int, header_trailing: bool) -> _DataLines:
    """Delimiter count, ends-with-'$' and blank per data line, the file's style, and which lines are acceptable."""
    line_no = np.arange(2, len(s) + 2, dtype=np.int64)
    dollar_pos = np.flatnonzero(buf == 0x24)
    delims = (np.searchsorted(dollar_pos, e) - np.searchsorted(dollar_pos, s)).astype(np.int64)
    length = e - s
    blank = length == 0
    ends_dollar = (length > 0) & (buf[np.maximum(e - 1, 0)] == 0x24)
    nonblank = ~blank
    first = np.flatnonzero(nonblank)[:rules.STYLE_SAMPLE]
    trailing = rules.trailing_style(header_trailing, delims[first], ends_dollar[first], n_cols)
    exact = nonblank & (delims == n_cols - 1)
    plus_one = nonblank & (delims == n_cols) & ends_dollar & trailing
    return _DataLines(s, e, line_no, delims, ends_dollar, blank, trailing,
                      main=plus_one if trailing else exact, ok=exact | plus_one)


def _bad_lines(data: bytes, dl: _DataLines, n_cols: int) -> list[QuarantinedLine]:
    quarantine: list[QuarantinedLine] = []
    for k in np.flatnonzero(~dl.blank & ~dl.ok):
        found = int(dl.delims[k]) + 1 - int(bool(dl.ends_dollar[k] and dl.trailing))
        quarantine.append((int(dl.line_no[k]), rules.field_count_reason(found, n_cols), n_cols, found,
                           data[dl.s[k]:dl.e[k]]))
    return quarantine


def _fallback_lines(data: bytes, buf: np.ndarray, dl: _DataLines) -> dict[int, bytes]:
    """{data line index: UTF-8 re-encoding} of the acceptable lines that are not UTF-8."""
    # only lines containing bytes >= 0x80 can be invalid UTF-8
    high = np.flatnonzero(buf >= 0x80)
    fallback: dict[int, bytes] = {}
    if len(high):
        cand = np.unique(np.searchsorted(dl.s, high, side="right") - 1)
        for k in cand:
            if k < 0 or not dl.ok[k]:
                continue
            raw = data[dl.s[k]:dl.e[k]]
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                fallback[int(k)] = rules.decode_fallback(raw)
    return fallback


def _split_main_and_odd(buf: np.ndarray, dl: _DataLines, fallback: dict[int, bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Lines Arrow reads from the bytes, and the (rare) rest rebuilt in Python.

    The rest: the minority shape, transcoded lines, and lines with a '\\r' inside (Arrow would end the line there).
    """
    main_mask = dl.main.copy()
    cr_pos = np.flatnonzero(buf == 0x0D)
    if len(cr_pos):
        main_mask &= np.searchsorted(cr_pos, dl.e) == np.searchsorted(cr_pos, dl.s)
    if fallback:
        main_mask[np.fromiter(fallback.keys(), dtype=np.int64)] = False
    return np.flatnonzero(main_mask), np.flatnonzero(dl.ok & ~main_mask)


def _main_body(data: bytes, buf: np.ndarray, dl: _DataLines, main_idx: np.ndarray, whole: bool) -> bytes:
    """The bytes of exactly the main-shape lines (``whole``: that is every line after the header)."""
    s = dl.s
    if whole:
        return data[s[0]:] if len(s) else b""
    if not len(main_idx):
        return b""
    # keep exactly the main-shape lines (with their '\n'): a byte mask over the buffer
    keep = np.zeros(len(s), dtype=bool)
    keep[main_idx] = True
    seg_end = np.minimum(np.concatenate((s[1:], [len(buf)])), len(buf))
    mask = np.repeat(keep, seg_end - s)
    body = buf[s[0]:][mask[: len(buf) - s[0]]].tobytes()
    if body and not body.endswith(b"\n"):
        body += b"\n"
    return body


def _read_main(body: bytes, names: list[str], trailing: bool, expected_rows: int, member: str) -> dict:
    if not body:
        return {n: pa.array([], pa.string()) for n in names}
    parse_names = list(names) + ([rules.TRAILING_FIELD] if trailing else [])
    tbl = rules.read_dollar_table(body, parse_names, block_size=64 << 20)
    if tbl.num_rows != expected_rows:  # a parser disagreement would silently shift line numbers
        raise IngestError(f"{member}: parsed {tbl.num_rows} rows but counted {expected_rows} lines")
    return {n: tbl.column(n) for n in names}
