"""Publishing a report folder atomically: staging, the files, the manifest last, one rename, then ``latest``.

The folder is built in ``DIR/.reports-staging/<run_id>/`` (same file system), validated, then renamed into
``DIR/reports/<run_id>/`` in one step; ``DIR/reports/latest`` (a relative symlink, plus a ``LATEST`` text file) is
updated last. A failure anywhere leaves the previous report and ``latest`` untouched.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa

from pipeline.atomic import atomic_path, sha256_file, write_json, write_parquet
from pipeline.jsonsafe import jsonable
from pipeline.layout import DataDir
from pipeline.reports.manifest import read_manifest
from pipeline.reports.params import REPORT_VERSION
from pipeline.reports.population import FUNNEL_SCHEMA
from pipeline.reports.scoring import ALL_PAIRS_SCHEMA, SIGNALS_SCHEMA, TREND_SCHEMA, focus_rows, to_table

log = logging.getLogger("pipeline.reports")


@dataclass(frozen=True)
class ReportTables:
    """The tables of one report folder (``analyses`` is :class:`pipeline.analyses.Results`)."""

    signals: pd.DataFrame
    all_pairs: pd.DataFrame
    trend: pd.DataFrame
    funnel: pd.DataFrame
    analyses: object


def latest_report_dir(data_dir: DataDir | str | os.PathLike) -> Path | None:
    """The folder ``DIR/reports/latest`` points at, or None (see :meth:`DataDir.latest_report`)."""
    data_dir = data_dir if isinstance(data_dir, DataDir) else DataDir.of(data_dir)
    return data_dir.latest_report()


def unchanged_latest(data_dir: DataDir, fingerprint: str) -> dict | None:
    """The build result of the latest report when it has this fingerprint (nothing to build), else None."""
    latest = latest_report_dir(data_dir)
    if latest is None:
        return None
    with contextlib.suppress(ValueError, OSError, KeyError):
        old = read_manifest(latest)
        if old.get("fingerprint") == fingerprint:
            sig = pd.read_parquet(latest / "signals.parquet")
            log.info("signals: curated inputs, config and parameters unchanged; latest report kept (%s)",
                     old["run_id"])
            return {"report_dir": str(latest), "run_id": old["run_id"], "changed": False, "focus": focus_rows(sig)}
    return None


@dataclass(frozen=True)
class Run:
    """One report folder on its way: ``staging`` while it is written, ``final`` once published."""

    data_dir: DataDir
    run_id: str
    created_at: dt.datetime

    @property
    def staging_root(self) -> Path:
        return self.data_dir.root / ".reports-staging"

    @property
    def staging(self) -> Path:
        return self.staging_root / self.run_id

    @property
    def final(self) -> Path:
        return self.data_dir.reports / self.run_id


def new_run(data_dir: DataDir, fingerprint: str, now: dt.datetime | None = None) -> Run:
    """A run id ``<UTC time>-<fingerprint[:8]>`` (``-2``, ``-3``... when that folder exists)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    run_id = f"{now:%Y%m%dT%H%M%SZ}-{fingerprint[:8]}"
    i = 1
    while (data_dir.reports / run_id).exists():
        i += 1
        run_id = f"{now:%Y%m%dT%H%M%SZ}-{fingerprint[:8]}-{i}"
    return Run(data_dir=data_dir, run_id=run_id, created_at=now)


def write_tables(run: Run, tables: ReportTables, *, params: dict, config, data_cutoff: str,
                 trend_basis: str) -> None:
    """A fresh staging folder with every Parquet table (schema-exact, run metadata in each file)."""
    from pipeline import analyses

    staging = run.staging
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    meta = {"faers.run_id": run.run_id, "faers.data_cutoff": data_cutoff, "faers.config_sha256": config.sha256,
            "faers.report_version": REPORT_VERSION, "faers.mgps_likelihood": params["mgps_likelihood"],
            "faers.exposure_roles": "+".join(params["roles"])}
    write_parquet(to_table(tables.signals, SIGNALS_SCHEMA), staging / "signals.parquet",
                  metadata={**meta, "faers.table": "signals"})
    write_parquet(to_table(tables.all_pairs, ALL_PAIRS_SCHEMA), staging / "all_pairs.parquet",
                  metadata={**meta, "faers.table": "all_pairs"})
    write_parquet(to_table(tables.trend, TREND_SCHEMA), staging / "trend.parquet",
                  metadata={**meta, "faers.table": "trend", "faers.trend_basis": trend_basis})
    write_parquet(pa.Table.from_pandas(tables.funnel, schema=FUNNEL_SCHEMA, preserve_index=False),
                  staging / "funnel.parquet", metadata={**meta, "faers.table": "funnel"})
    for name in analyses.FILES:
        write_parquet(analyses.to_arrow(tables.analyses.tables[name]), staging / f"{name}.parquet",
                      metadata={**meta, "faers.table": name})


def write_page_and_manifest(run: Run, manifest: dict, html_text: str) -> None:
    """``report.html``, then ``manifest.json`` with the sha256 and size of every other file (last)."""
    staging = run.staging
    with atomic_path(staging / "report.html") as tmp:
        tmp.write_text(html_text, encoding="utf-8")
    manifest["files"] = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                         for p in sorted(staging.iterdir()) if p.is_file() and p.name != "manifest.json"}
    write_json(jsonable(manifest), staging / "manifest.json")


def publish(run: Run) -> str:
    """Rename the staged folder into ``DIR/reports/`` and point ``latest`` at it; returns how ``latest`` is kept."""
    run.final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(run.staging, run.final)
    return update_latest(run.data_dir.reports, run.run_id)


def discard_staging(run: Run) -> None:
    """Remove what is left in staging (everything after a failure; nothing after :func:`publish`)."""
    shutil.rmtree(run.staging, ignore_errors=True)
    with contextlib.suppress(OSError):
        run.staging_root.rmdir()


def update_latest(reports: Path, run_id: str) -> str:
    """Write ``LATEST`` (text) then swap the ``latest`` symlink in with a rename (last step)."""
    with atomic_path(reports / "LATEST") as tmp:
        tmp.write_text(run_id + "\n")
    link = reports / "latest"
    tmp_link = reports / f".latest.{os.getpid()}.tmp"
    try:
        with contextlib.suppress(FileNotFoundError):
            tmp_link.unlink()
        os.symlink(run_id, tmp_link, target_is_directory=True)
        if link.exists() and not link.is_symlink():
            shutil.rmtree(link) if link.is_dir() else link.unlink()
        os.replace(tmp_link, link)
        return "symlink"
    except OSError as exc:  # e.g. a file system without symlinks: LATEST alone marks the newest
        with contextlib.suppress(OSError):
            tmp_link.unlink()
        with contextlib.suppress(OSError):
            if link.is_symlink():  # a stale link would win over LATEST in readers
                link.unlink()
        log.warning("reports/latest: symlink not possible (%s); reports/LATEST names the newest run", exc)
        return "LATEST file"
