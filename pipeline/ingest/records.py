"""What ingesting produces: one record per file, the parsed rows of a file, one result per quarter."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.errors import PipelineError
from pipeline.quarters import Quarter

#: one quarantined line: (line number, reason, expected fields, found fields, raw bytes)
QuarantinedLine = tuple[int, str, int, int, bytes]


# The field order is the key order of the file entries in the ingest record (``f.__dict__``).
@dataclass
class FileRecord:
    """Counts and shape of one ingested member (one entry of the ingest record's ``files``)."""

    table: str
    member: str
    data_lines: int = 0
    rows_written: int = 0
    quarantined: int = 0
    blank_lines: int = 0
    encoding_fallback_lines: int = 0
    trailing_dollar: bool = False
    columns_missing: list[str] = field(default_factory=list)
    columns_unknown: list[str] = field(default_factory=list)

    @property
    def reconciled(self) -> bool:
        """Every data line is either a row written or a line quarantined."""
        return self.data_lines == self.rows_written + self.quarantined


@dataclass
class ParsedFile:
    """One parsed member: its text columns, the line each row came from, its record and its rejects."""

    table: pa.Table                      # canonical schema, without provenance
    source_lines: np.ndarray             # int64 line number per row
    record: FileRecord
    quarantine: list[QuarantinedLine]


@dataclass
class QuarterResult:
    """The outcome of one quarter: its files, or why it was skipped or not ingested."""

    quarter: Quarter
    zip_path: Path
    skipped: bool = False
    files: list[FileRecord] = field(default_factory=list)
    unknown_members: list[str] = field(default_factory=list)
    seconds: float = 0.0
    validation: dict | None = None
    #: why this quarter was not ingested (``ingest(..., keep_going=True)``); earlier data of it is untouched
    error: PipelineError | None = None

    @property
    def rows(self) -> dict[str, int]:
        """Rows written per table."""
        out: dict[str, int] = {}
        for f in self.files:
            out[f.table] = out.get(f.table, 0) + f.rows_written
        return out

    @property
    def quarantined(self) -> int:
        """Lines quarantined over all files."""
        return sum(f.quarantined for f in self.files)

    def summary_line(self) -> str:
        """One line for the operator: rows per table and quarantined lines, or why nothing was done."""
        if self.error is not None:
            return f"{self.quarter}: FAILED, not ingested ({self.error})"
        if self.skipped:
            return f"{self.quarter}: unchanged ({self.zip_path.name})"
        rows = ", ".join(f"{t} {n:,}" for t, n in self.rows.items())
        return (f"{self.quarter}: {rows}; quarantined {self.quarantined:,} line(s); "
                f"{self.seconds:.1f}s")
