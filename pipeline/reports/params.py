"""What a report is built from: its parameters (checked against the config) and the curated database it reads.

A cut-off picks the database as it stood then (:func:`pipeline.reports.dating.curated_for`). The parameters, the
config, the curated files and ``REPORT_VERSION`` make the report's fingerprint: a report with the latest one's
fingerprint is not built again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.atomic import sha256_file
from pipeline.errors import PipelineError
from pipeline.layout import DataDir
from pipeline.reports import dating
from pipeline.reports.trend import HISTORY_FILES
from pipeline.vocabulary import FAMILY, ROLE_CODES, SUBSTANCES

#: Bump when the report's content rules change (part of the "changed" fingerprint).
REPORT_VERSION = "1"

#: curated tables every report reads (the version tables of the trend are read when present)
CURATED_FILES = ("reports", "report_ingredients", "report_pts", "funnel", "unmapped_drugs")


def as_list(v) -> list[str] | None:
    """A comma (or semicolon) separated text or a sequence -> trimmed non-empty items, or None when none."""
    if v is None:
        return None
    if isinstance(v, str):
        v = [x for x in v.replace(";", ",").split(",")]
    out = [str(x).strip() for x in v if str(x).strip()]
    return out or None


def resolve_params(config, *, substances=None, pt_groups=None, roles=None, mgps_likelihood=None,
                   cutoff_quarter=None, from_quarter=None) -> dict:
    """Validate overrides against the config; return the effective parameters (JSON-able)."""
    from pipeline.quarters import Quarter
    from pipeline.stats import LIKELIHOODS

    allowed = tuple(getattr(config, "substances", SUBSTANCES)) + (FAMILY,)
    subs = as_list(substances) or list(allowed)
    bad = [s for s in subs if s not in allowed]
    if bad:
        raise PipelineError(f"unknown substance(s) {', '.join(bad)}; choose from {', '.join(allowed)}")
    subs = [s for s in allowed if s in subs]  # config order, family last
    group_names = [g.name for g in config.pt_groups]
    groups = as_list(pt_groups) or group_names
    bad = [g for g in groups if g not in group_names]
    if bad:
        raise PipelineError(f"unknown PT group(s) {', '.join(bad)}; configured: {', '.join(group_names)}")
    groups = [g for g in group_names if g in groups]
    role_list = [r.upper() for r in (as_list(roles) or list(config.exposure_roles))]
    bad = [r for r in role_list if r not in ROLE_CODES]
    if bad:
        raise PipelineError(f"unknown role code(s) {', '.join(bad)}; use {', '.join(ROLE_CODES)}")
    role_list = [r for r in ROLE_CODES if r in role_list]
    lik = mgps_likelihood or config.mgps_likelihood
    if lik not in LIKELIHOODS:
        raise PipelineError(f"unknown MGPS likelihood {lik!r}; choose one of {', '.join(LIKELIHOODS)}")
    cut = str(Quarter.parse(cutoff_quarter)) if cutoff_quarter else None
    start = str(Quarter.parse(from_quarter)) if from_quarter else None
    if cut and start and start > cut:
        raise PipelineError(f"--from-quarter {start} is after --cutoff-quarter {cut}: no case can be in the window")
    return {"substances": subs, "pt_groups": groups, "roles": role_list, "mgps_likelihood": lik,
            "cutoff_quarter": cut, "from_quarter": start}


@dataclass(frozen=True)
class CuratedInputs:
    """The curated database one report reads, with what identifies it.

    Attributes
    ----------
    folder : the curated folder (``DIR/curated`` or ``DIR/curated_asof/<Q>``).
    manifest : its ``manifest.json`` ({} when absent); ``manifest_sha256`` the file's sha256 (None when absent).
    files_sha256 : ``{"<table>.parquet": sha256}`` of the tables the report reads.
    fingerprint : sha256 of report version, config, parameters and the above.
    """

    folder: Path
    manifest: dict
    manifest_sha256: str | None
    files_sha256: dict
    fingerprint: str


def curated_inputs(data_dir: DataDir, config, params: dict, *, progress: bool = False) -> CuratedInputs:
    """The curated folder for ``params`` (building the cut-off database when needed), checked and fingerprinted.

    Raises
    ------
    PipelineError
        When the folder lacks a table of ``CURATED_FILES``.
    """
    cur = dating.curated_for(data_dir, config, params["cutoff_quarter"], progress=progress)
    missing = [n for n in CURATED_FILES if not (cur / f"{n}.parquet").exists()]
    if missing:
        raise PipelineError(f"no curated tables in {cur} (missing {', '.join(missing)}.parquet); "
                            f"run `pipeline curate` first")
    manifest_path = cur / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest_sha = sha256_file(manifest_path) if manifest_path.exists() else None
    shas = {f"{n}.parquet": sha256_file(cur / f"{n}.parquet") for n in CURATED_FILES + HISTORY_FILES
            if (cur / f"{n}.parquet").exists()}
    return CuratedInputs(folder=cur, manifest=manifest, manifest_sha256=manifest_sha, files_sha256=shas,
                         fingerprint=fingerprint(manifest_sha or "", shas, config, params))


def fingerprint(curated_manifest_sha: str, curated_shas: dict, config, params: dict) -> str:
    """sha256 over the report version, the config, the curated manifest and tables, and the parameters."""
    h = hashlib.sha256(f"report-v{REPORT_VERSION}|{config.sha256}|{curated_manifest_sha}".encode())
    for k in sorted(curated_shas):
        h.update(f"|{k}:{curated_shas[k]}".encode())
    h.update(json.dumps(params, sort_keys=True).encode())
    return h.hexdigest()
