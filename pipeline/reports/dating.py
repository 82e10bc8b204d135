"""Dating of a report: which database a run reads (``--cutoff-quarter``) and which cases it studies
(``--from-quarter``).

* **Cut-off Q** = the database as it stood at the end of Q: the curation rules applied to the raw quarters <= Q
  only - each case at its latest version received by Q, deleted-case lists of quarters <= Q only, cross-case
  duplicate flags derived on that database. Built by :func:`pipeline.curate.curate` with ``as_of=Q`` into
  ``DIR/curated_asof/<Q>/`` and reused while its raw inputs, the config and the code are unchanged. A cut-off at or
  after the last ingested quarter is the curated database itself.
* **From-quarter Q** = a study window: only cases first received in Q or later (``curated reports.first_quarter``:
  the calendar quarter of ``init_fda_dt``, else the first quarter a row of the case appears in), for the focus
  rows and the background alike.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.layout import DataDir
from pipeline.quarters import Quarter

log = logging.getLogger("pipeline.reports")

CUTOFF_RULE = ("the database as it stood at the end of {q}: the curation re-run on the quarterly files <= {q} "
               "only (each case at its latest version received by {q}, deleted-case lists of quarters <= {q} "
               "only, cross-case duplicate flags derived on that database)")
FROM_RULE = ("study window: only cases first received in {q} or later (calendar quarter of init_fda_dt, else the "
             "first quarterly file carrying the case), in the focus rows and the background alike")


def raw_quarters(data_dir: DataDir) -> list[str]:
    """Quarters with an ingested DEMO table (sorted labels)."""
    from pipeline.curate.versions import raw_files

    return sorted(p.parent.name.split("=", 1)[1] for p in raw_files(data_dir, "DEMO"))


def curated_for(data_dir: DataDir, config, cutoff: str | None, *, progress: bool = False) -> Path:
    """The curated folder a run with this cut-off reads (building ``curated_asof/<Q>`` when needed)."""
    if cutoff is None:
        return data_dir.curated
    cut = str(Quarter.parse(cutoff))
    quarters = raw_quarters(data_dir)
    if not quarters:
        raise PipelineError(f"--cutoff-quarter {cut}: no raw tables in {data_dir.raw} to rebuild the database as it "
                            f"stood then (run `pipeline ingest` first)")
    if cut < quarters[0]:
        raise PipelineError(f"--cutoff-quarter {cut}: the database was empty then (the first ingested quarter is "
                            f"{quarters[0]})")
    if cut >= quarters[-1]:
        return data_dir.curated  # every ingested quarter is <= the cut-off: the curated tables are that database
    from pipeline.curate import curate

    summary = curate(data_dir, config, progress=progress, as_of=cut)
    log.info("signals: database as of %s in %s (%s)", cut, summary["curated_dir"],
             "rebuilt" if summary.get("changed", True) else "cached")
    return Path(summary["curated_dir"])


def describe(params: dict, curated: Path, data_dir: DataDir) -> dict:
    """The manifest's ``dating`` block."""
    cut, start = params.get("cutoff_quarter"), params.get("from_quarter")
    try:
        where = str(curated.relative_to(data_dir.root))
    except ValueError:
        where = str(curated)
    return {
        "cutoff_quarter": cut,
        "from_quarter": start,
        "curated_dir": where,
        "database": CUTOFF_RULE.format(q=cut) if cut else "every ingested quarter (no cut-off)",
        "study_window": FROM_RULE.format(q=start) if start else "every case (no from-quarter)",
    }


def methods_text(dating: dict | None) -> str:
    """Plain-text paragraph for the report's methods section."""
    if not dating:
        return "Every ingested quarter; every case."
    cap = lambda t: t[:1].upper() + t[1:]  # noqa: E731
    return f"{cap(dating['database'])}. {cap(dating['study_window'])}. Curated tables read: {dating['curated_dir']}."


__all__ = ["curated_for", "describe", "methods_text", "raw_quarters", "CUTOFF_RULE", "FROM_RULE"]
