"""Landing zips: quarter from the file name, safety checks, member discovery, reading one member."""

from __future__ import annotations

import os
import re
import struct
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from pipeline.errors import IngestError
from pipeline.quarters import Quarter

ZIP_NAME = re.compile(r"(?i)^(?:f?aers)_ascii_(\d{4})q([1-4])\.zip$")
DATA_MEMBER = re.compile(r"(?i)(?:^|/)(DEMO|DRUG|REAC|OUTC|RPSR|THER|INDI)(\d\d)Q([1-4])(_new)?\.txt$")

#: Refuse archives that would unpack to more than this (a real quarter is ~0.5 GB).
MAX_UNZIPPED_BYTES = int(os.environ.get("FAERS_MAX_UNZIPPED_BYTES", 8 * 1024**3))
#: ... or whose members claim a compression ratio no text file reaches (zip bombs).
MAX_COMPRESSION_RATIO = 200

_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, (fixed fields), name length, extra length


def quarter_of_zip(path: Path) -> Quarter | None:
    """The quarter a landing zip holds, from its FDA file name; ``None`` for any other file.

    Parameters
    ----------
    path : Path
        The zip (only its name is read), e.g. ``faers_ascii_2024q1.zip`` or ``aers_ascii_2012q3.zip``.

    Returns
    -------
    Quarter or None
    """
    m = ZIP_NAME.match(path.name)
    return Quarter(int(m.group(1)), int(m.group(2))) if m else None


def member_infos(zip_path: Path) -> dict[str, zipfile.ZipInfo]:
    """The members of a landing zip by name, after the safety checks.

    Parameters
    ----------
    zip_path : Path
        The landing zip.

    Returns
    -------
    dict of str to zipfile.ZipInfo

    Raises
    ------
    IngestError
        The file is not a valid zip, or a member has an unsafe path, a zip-bomb compression ratio, or the
        archive would unpack to more than ``MAX_UNZIPPED_BYTES``.
    """
    try:
        with zipfile.ZipFile(zip_path) as zf:
            _check_zip_safety(zf, zip_path)
            return {i.filename: i for i in zf.infolist()}
    except zipfile.BadZipFile as exc:
        raise IngestError(f"{zip_path.name} is not a valid zip (truncated or corrupt?): {exc}") from None


def _check_zip_safety(zf: zipfile.ZipFile, zip_path: Path) -> None:
    total = 0
    for info in zf.infolist():
        name = info.filename
        parts = PurePosixPath(name.replace("\\", "/")).parts
        if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts:
            raise IngestError(f"{zip_path.name}: refusing unsafe member path {name!r}")
        total += info.file_size
        if info.compress_size and info.file_size / info.compress_size > MAX_COMPRESSION_RATIO \
                and info.file_size > 1024**2:
            raise IngestError(f"{zip_path.name}: member {name!r} claims a compression ratio of "
                              f"{info.file_size / info.compress_size:.0f}:1 (zip bomb?)")
    if total > MAX_UNZIPPED_BYTES:
        raise IngestError(f"{zip_path.name}: would unpack to {total / 1024**3:.1f} GiB, over the "
                          f"{MAX_UNZIPPED_BYTES / 1024**3:.1f} GiB cap (FAERS_MAX_UNZIPPED_BYTES)")


def classify_members(names: list[str]) -> tuple[dict[str, str], list[str], list[str]]:
    """Map data members to tables, collect deleted lists and unknown members.

    Returns ``({table: member}, [deleted members], [unknown members])``. When a quarter ships
    both ``DEMO18Q1.txt`` and ``DEMO18Q1_new.txt``, the ``_new`` file wins.
    """
    tables: dict[str, str] = {}
    deleted, unknown = [], []
    for name in sorted(names):
        if name.endswith("/"):
            continue
        m = DATA_MEMBER.search(name)
        if m:
            table = m.group(1).upper()
            if table in tables and not m.group(4):
                continue  # keep the _new variant already found
            tables[table] = name
        elif name.lower().endswith(".txt") and "delet" in name.lower():
            deleted.append(name)
        else:
            unknown.append(name)
    return tables, deleted, unknown


def read_member(zip_path: Path, member: str, expected_size: int) -> bytes:
    """The member's bytes, CRC-checked and capped at its declared size.

    Deflated members are inflated in one call from their raw bytes: ``zipfile``'s streaming reader
    costs twice the CPU here (chunked reads, CRC per chunk, joins) for the same checks.

    Parameters
    ----------
    zip_path : Path
        The landing zip.
    member : str
        The member's name in the zip.
    expected_size : int
        Its declared (uncompressed) size; no more than one byte beyond it is ever inflated.

    Returns
    -------
    bytes

    Raises
    ------
    zipfile.BadZipFile
        Truncated, corrupt or mislabelled member data, or a bad CRC.
    IngestError
        The member holds more or fewer bytes than declared.
    """
    with zipfile.ZipFile(zip_path) as zf:
        info = zf.getinfo(member)
        if info.compress_type != zipfile.ZIP_DEFLATED or info.flag_bits & 0x1:
            with zf.open(info) as fh:  # stored, other methods, encrypted: zipfile checks and refuses
                data = fh.read(expected_size + 1)
        else:
            raw = _raw_member_bytes(zip_path, info)
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            data = inflater.decompress(raw, expected_size + 1)  # the cap defeats a lying size field
            del raw
            if len(data) <= expected_size and not inflater.eof:
                raise zipfile.BadZipFile(f"member {member!r} ends before its deflate stream does")
            if len(data) == info.file_size and zlib.crc32(data) != info.CRC:
                raise zipfile.BadZipFile(f"bad CRC-32 for member {member!r}")
    if len(data) > expected_size:
        raise IngestError(f"{zip_path.name}: member {member!r} is larger than its declared size")
    if len(data) != info.file_size:
        raise IngestError(f"{zip_path.name}: member {member!r} is {len(data)} bytes, not the declared {info.file_size}")
    return data


def _raw_member_bytes(zip_path: Path, info: zipfile.ZipInfo) -> bytes:
    """The compressed bytes of one member, located through its local header (checked like zipfile does)."""
    with open(zip_path, "rb") as fh:
        fh.seek(info.header_offset)
        head = fh.read(_LOCAL_HEADER.size)
        if len(head) != _LOCAL_HEADER.size:
            raise zipfile.BadZipFile(f"member {info.filename!r}: truncated local header")
        signature, name_len, extra_len = _LOCAL_HEADER.unpack(head)
        if signature != b"PK\x03\x04":
            raise zipfile.BadZipFile(f"member {info.filename!r}: bad local header signature")
        name = fh.read(name_len)
        if name.decode("utf-8" if info.flag_bits & 0x800 else "cp437") != info.orig_filename:
            raise zipfile.BadZipFile(f"member {info.filename!r}: local header names {name!r}")
        fh.seek(extra_len, os.SEEK_CUR)
        raw = fh.read(info.compress_size)
    if len(raw) != info.compress_size:
        raise zipfile.BadZipFile(f"member {info.filename!r} is truncated")
    return raw

