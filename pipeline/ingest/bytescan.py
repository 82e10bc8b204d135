"""Byte-level scans of a file body for the fast parser: line ends, non-ASCII bytes, lines that are not UTF-8."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.ingest.lines import decode_fallback

#: bytes per slice of the scan (a module setting so that tests can make slices tiny)
SCAN_STEP = 1 << 22


@dataclass
class ByteCounts:
    """Line ends and non-ASCII bytes of a file body."""

    newlines: int
    carriage_returns: int
    crlf: int
    high: np.ndarray | None  # positions of bytes >= 0x80, None when over the limit


def count_bytes(data: bytes, start: int, high_limit: int) -> ByteCounts:
    """Count '\\n', '\\r' and '\\r\\n' and find the non-ASCII bytes of ``data[start:]`` in one pass.

    numpy over ``SCAN_STEP`` slices into reused scratch arrays: no GIL held for long, and no buffer the
    size of the file (a fresh one costs more in page faults here than the counting itself).

    Parameters
    ----------
    data : bytes
        The whole file.
    start : int
        Where the counting starts (the first data line).
    high_limit : int
        Stop collecting non-ASCII positions beyond this many (``high`` is then ``None``).

    Returns
    -------
    ByteCounts
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    is_nl = np.empty(SCAN_STEP + 1, dtype=bool)
    is_cr = np.empty(SCAN_STEP + 1, dtype=bool)
    newlines = crs = crlf = n_high = 0
    high: list[np.ndarray] = []
    look_for_high = not data.isascii()
    for at in range(start, len(buf), SCAN_STEP):
        piece = buf[at:at + SCAN_STEP + 1]  # one byte of overlap for the '\r\n' pairs
        own = min(SCAN_STEP, len(piece))
        nl, cr = is_nl[:len(piece)], is_cr[:len(piece)]
        np.equal(piece, 0x0A, out=nl)
        np.equal(piece, 0x0D, out=cr)
        newlines += int(np.count_nonzero(nl[:own]))
        k = int(np.count_nonzero(cr[:own]))
        if k:
            crs += k
            crlf += int(np.count_nonzero(cr[:own][: len(piece) - 1] & nl[1:own + 1]))
        if look_for_high and n_high <= high_limit and piece[:own].max() >= 0x80:
            found = np.flatnonzero(piece[:own] >= 0x80) + at
            n_high += len(found)
            high.append(found)
    if n_high > high_limit:
        return ByteCounts(newlines, crs, crlf, None)
    return ByteCounts(newlines, crs, crlf, np.concatenate(high) if high else np.empty(0, dtype=np.int64))


def transcode_invalid_lines(data: bytes, high: np.ndarray) -> tuple[bytes, dict[int, bytes]]:
    """Re-encode the (rare) data lines that are not valid UTF-8 from cp1252, splicing them in place.

    Parameters
    ----------
    data : bytes
        The whole file.
    high : numpy.ndarray
        Positions of its bytes >= 0x80.

    Returns
    -------
    tuple of (bytes, dict of int to bytes)
        The new buffer (line count unchanged) and {line number: original bytes}.
    """
    if len(high) == 0:
        return data, {}
    view = memoryview(data)  # slices of it are joined without copying them first
    pieces, originals, done, last = [], {}, set(), 0
    counted_to, line_of_counted = 0, 1  # newlines are counted incrementally: positions only grow
    for pos in high.tolist():
        start = data.rfind(b"\n", 0, pos) + 1
        if start in done:
            continue
        done.add(start)
        line_of_counted += data.count(b"\n", counted_to, start)
        counted_to = start
        end = data.find(b"\n", pos)
        end = len(data) if end < 0 else end
        line = data[start:end]
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            originals[line_of_counted] = line.rstrip(b"\r")
            pieces += [view[last:start], decode_fallback(line)]
            last = end
    if not originals:
        return data, {}
    pieces.append(view[last:])
    return b"".join(pieces), originals
