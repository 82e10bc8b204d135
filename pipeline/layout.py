"""Where every stage reads and writes inside the data directory (``--data-dir``, default ``./data``).

::

    DIR/landing/<zip as named by FDA>          fetched archives, with landing/manifest.json
    DIR/raw/<table>/quarter=YYYYQn/part.parquet one file per table per quarter (atomic replace)
    DIR/raw/_ingest/YYYYQn.json                 per-quarter ingest record (line reconciliation, sha256)
    DIR/quarantine/quarter=YYYYQn/lines.parquet rejected lines: file, line number, raw bytes, reason
    DIR/validation/...                          Great Expectations results (JSON) and Data Docs
    DIR/curated/                                case-level analysis tables + funnel
    DIR/curated_asof/<Q>/                       the same for the database as it stood at the end of quarter Q
    DIR/reports/<run_id>/, DIR/reports/latest   report folders
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline.quarters import Quarter

#: FAERS data tables, in FDA's order.
TABLES = ("DEMO", "DRUG", "REAC", "OUTC", "RPSR", "THER", "INDI")
#: The deleted-case lists are ingested as one more table.
DELETED = "DELETED"


def default_data_dir() -> Path:
    return Path(os.environ.get("FAERS_DATA_DIR") or "data")


@dataclass(frozen=True)
class DataDir:
    root: Path

    def __post_init__(self):
        # absolute, so that paths stay valid whatever the working directory of a worker or library
        object.__setattr__(self, "root", Path(self.root).absolute())

    @classmethod
    def of(cls, root: str | os.PathLike | None) -> "DataDir":
        return cls(Path(root) if root else default_data_dir())

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    @property
    def landing_manifest(self) -> Path:
        return self.landing / "manifest.json"

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    def raw_table(self, table: str) -> Path:
        return self.raw / table.lower()

    def raw_part(self, table: str, quarter: Quarter) -> Path:
        return self.raw_table(table) / f"quarter={quarter}" / "part.parquet"

    def ingest_record(self, quarter: Quarter) -> Path:
        return self.raw / "_ingest" / f"{quarter}.json"

    def quarantine_part(self, quarter: Quarter) -> Path:
        return self.root / "quarantine" / f"quarter={quarter}" / "lines.parquet"

    @property
    def validation(self) -> Path:
        return self.root / "validation"

    @property
    def curated(self) -> Path:
        return self.root / "curated"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def latest_report(self) -> Path | None:
        """The report folder ``reports/latest`` points at, or None when there is none or it is gone.

        ``latest`` is a relative symlink with a ``LATEST`` text file beside it (for file systems without
        symlinks); either counts only if its folder still holds a ``manifest.json``.
        """
        link = self.reports / "latest"
        if link.is_symlink() or link.is_dir():
            target = link.resolve()
            if (target / "manifest.json").is_file():
                return target
        marker = self.reports / "LATEST"
        if marker.is_file():
            target = (self.reports / marker.read_text().strip()).resolve()
            if (target / "manifest.json").is_file():
                return target
        return None

    def ingested_quarters(self) -> list[Quarter]:
        folder = self.raw / "_ingest"
        if not folder.is_dir():
            return []
        return sorted(Quarter.parse(p.stem) for p in folder.glob("*.json"))
