"""The entry point: ingest every landing quarter (or the ones asked for) whose zip is new or changed."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from pipeline.atomic import sha256_file
from pipeline.errors import IngestError, PipelineError
from pipeline.ingest.quarter import ingest_zip
from pipeline.ingest.records import QuarterResult
from pipeline.ingest.zips import quarter_of_zip
from pipeline.layout import DataDir
from pipeline.quarters import Quarter

log = logging.getLogger("pipeline.ingest")


def landing_zips(data_dir: DataDir) -> dict[Quarter, Path]:
    """Quarter -> landing zip (ASCII extracts only, named as FDA names them)."""
    found: dict[Quarter, Path] = {}
    if not data_dir.landing.is_dir():
        return found
    for p in sorted(data_dir.landing.iterdir()):
        q = quarter_of_zip(p)
        if q is not None and p.is_file():
            found[q] = p
    return found


def is_ingested(data_dir: DataDir, quarter: Quarter, zip_path: Path) -> bool:
    """True when ``zip_path`` (its sha256) is what quarter ``quarter`` was last ingested from."""
    return zip_path.exists() and _landing_sha(data_dir, zip_path) == _recorded_sha(data_dir, quarter)


def ingest(data_dir: DataDir, quarters: list[Quarter] | None = None, *, force: bool = False,
           progress: bool = True, validate: bool = True, keep_going: bool = False,
           quarantine_max: float | None = None) -> list[QuarterResult]:
    """Ingest every landing quarter (or the ones asked for) whose zip is new or changed.

    With ``keep_going`` a quarter that cannot be ingested (bad zip, failed validation) is recorded in its
    result's ``error`` and the others go on; without it the first one raises. Operating-system errors (disk full)
    always stop at once: the next quarter would meet the same disk.

    Parameters
    ----------
    data_dir : DataDir
        The data directory (zips in ``landing/``).
    quarters : list of Quarter or None
        The quarters to ingest (each must have a landing zip); ``None`` = every landing zip.
    force : bool
        Ingest again even when the zip is the one last ingested.
    progress : bool
        Show progress bars (on a terminal).
    validate : bool
        Run the raw data checks before publishing each quarter.
    keep_going : bool
        Carry on past a quarter that cannot be ingested.
    quarantine_max : float or None
        Critical quarantined share of a large file's lines (config ``[thresholds] quarantine_rate_max``).

    Returns
    -------
    list of QuarterResult
        One per selected quarter, in quarter order (``skipped`` when unchanged).

    Raises
    ------
    IngestError
        No landing zip (for a quarter asked for), or a quarter cannot be ingested (without ``keep_going``).
    """
    selected = _select(data_dir, quarters)
    results = []
    todo = []
    for quarter, path in sorted(selected.items()):
        sha = _landing_sha(data_dir, path)
        if not force and sha == _recorded_sha(data_dir, quarter):
            results.append(QuarterResult(quarter=quarter, zip_path=path, skipped=True))
        else:
            todo.append((quarter, path, sha))
    if len(todo) > 1:
        log.info("ingest: %d quarter(s) to ingest (%.0f MB of zips), %d unchanged", len(todo),
                 sum(p.stat().st_size for _, p, _ in todo) / 1e6, len(results))
    results += _ingest_each(data_dir, todo, progress=progress, validate=validate, keep_going=keep_going,
                            quarantine_max=quarantine_max)
    results.sort(key=lambda r: r.quarter)
    return results


def _select(data_dir: DataDir, quarters: list[Quarter] | None) -> dict[Quarter, Path]:
    available = landing_zips(data_dir)
    if quarters is not None:
        absent = [str(q) for q in quarters if q not in available]
        if absent:
            raise IngestError(f"no landing zip for {', '.join(absent)} in {data_dir.landing} "
                              f"(run `pipeline fetch` first)")
        return {q: available[q] for q in quarters}
    if not available:
        raise IngestError(f"no FAERS ASCII zips in {data_dir.landing} (run `pipeline fetch` first)")
    return available


def _ingest_each(data_dir: DataDir, todo: list[tuple[Quarter, Path, str]], *, progress: bool, validate: bool,
                 keep_going: bool, quarantine_max: float | None) -> list[QuarterResult]:
    results = []
    # a first load is ~90 quarters: one bar over the quarters above each quarter's own bar
    outer = _quarters_bar(len(todo), progress and len(todo) > 1)
    t0 = time.perf_counter()
    try:
        for i, (quarter, path, sha) in enumerate(todo, 1):
            outer.set_postfix_str(str(quarter))
            try:
                res = ingest_zip(data_dir, path, quarter, progress=progress, validate=validate, zip_sha256=sha,
                                 quarantine_max=quarantine_max)
            except PipelineError as exc:
                if not keep_going:
                    raise
                log.info("%s: not ingested: %s", quarter, exc)  # the caller reports it
                res = QuarterResult(quarter=quarter, zip_path=path, error=exc)
            else:
                log.info("ingested %d/%d %s (%.0f s so far)", i, len(todo), res.summary_line(),
                         time.perf_counter() - t0)
            outer.update()
            results.append(res)
    finally:
        outer.close()
    return results


def _recorded_sha(data_dir: DataDir, quarter: Quarter) -> str | None:
    path = data_dir.ingest_record(quarter)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text()).get("zip_sha256")
    except (OSError, ValueError):
        return None


def _landing_sha(data_dir: DataDir, zip_path: Path) -> str:
    """sha256 of a landing zip, from the landing manifest when it matches the file's size."""
    try:
        manifest = json.loads(data_dir.landing_manifest.read_text())
        entry = manifest.get("files", {}).get(zip_path.name)
        if entry and entry.get("size") == zip_path.stat().st_size and entry.get("mtime_ns") == zip_path.stat().st_mtime_ns:
            return entry["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    return sha256_file(zip_path)


def _quarters_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="ingest", unit="quarter", disable=None if enabled else True)
