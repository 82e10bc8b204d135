"""A report's ``manifest.json``: what was counted, from which inputs, with which rules, and how it validated.

Also what the manifest and the page say about the inputs: synthetic-data evidence, the ingest records, the
curation's notes (unmapped drug names, name conflicts, duplicate pairs to review), and the output validation.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow.parquet as pq

from pipeline.layout import DataDir
from pipeline.reports import dating, trend
from pipeline.reports.params import REPORT_VERSION, CuratedInputs
from pipeline.reports.scoring import FLAG_COLUMNS, Prior, count_outside

if TYPE_CHECKING:
    from pipeline.reports.population import Population
    from pipeline.reports.publish import ReportTables

SYNTHETIC_MARKER = b"SYNTHETIC DATA"


def read_manifest(report_dir: str | os.PathLike) -> dict:
    """The ``manifest.json`` of a report folder."""
    return json.loads((Path(report_dir) / "manifest.json").read_text())


def package_versions() -> dict[str, str]:
    """Python and the installed versions of the packages the numbers depend on."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("ketamine-faers-signals", "numpy", "pandas", "pyarrow", "scipy", "duckdb", "great-expectations",
                 "apache-airflow"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def ingest_inputs(data_dir: DataDir, curated_manifest: dict) -> list[dict]:
    """The raw quarters behind the curated tables (from their manifest, else from the ingest records)."""
    inputs = curated_manifest.get("inputs")
    if inputs:
        return [{k: r.get(k) for k in ("quarter", "era", "zip", "zip_sha256", "ingest_record_sha256")}
                for r in inputs]
    out = []
    folder = data_dir.raw / "_ingest"
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        raw = p.read_bytes()
        with contextlib.suppress(ValueError):
            rec = json.loads(raw)
            out.append({"quarter": rec.get("quarter", p.stem), "era": rec.get("era"), "zip": rec.get("zip"),
                        "zip_sha256": rec.get("zip_sha256"),
                        "ingest_record_sha256": hashlib.sha256(raw).hexdigest()})
    return out


def detect_synthetic(data_dir: DataDir, inputs: list[dict] | None = None) -> dict:
    """Is the input a synthetic mirror written by ``pipeline sample``?

    Evidence, any of: a landing zip whose ``README.txt`` starts with "SYNTHETIC DATA" (the generator writes it into
    every zip); an ingest record listing that member; a ``truth.json`` with ``"synthetic": true`` beside the
    ``file://`` source recorded in ``landing/manifest.json``.
    """
    evidence: list[str] = []
    inputs = inputs if inputs is not None else ingest_inputs(data_dir, {})
    for rec in inputs:
        name = rec.get("zip")
        if not name:
            continue
        path = data_dir.landing / name
        if path.exists():
            with contextlib.suppress(OSError, zipfile.BadZipFile, KeyError):
                with zipfile.ZipFile(path) as zf:
                    if "README.txt" in zf.namelist():
                        with zf.open("README.txt") as f:
                            if f.read(200).lstrip(b"\xef\xbb\xbf").startswith(SYNTHETIC_MARKER):
                                evidence.append(f"{name}: README.txt says SYNTHETIC DATA")
    manifest = data_dir.landing_manifest
    if manifest.exists():
        with contextlib.suppress(ValueError, OSError, AttributeError, TypeError):
            from urllib.parse import unquote, urlparse

            doc = json.loads(manifest.read_text())
            files = doc.get("files", doc) if isinstance(doc, dict) else {}
            entries = files.values() if isinstance(files, dict) else files
            seen = set()
            for e in entries:
                url = str(e.get("url", "")) if isinstance(e, dict) else ""
                if url.startswith("file://"):
                    folder = Path(unquote(urlparse(url).path)).parent
                elif url.startswith("/"):  # a local folder source is recorded as a plain path
                    folder = Path(url).parent
                else:
                    continue
                if folder in seen:
                    continue
                seen.add(folder)
                truth = folder / "truth.json"
                if truth.exists() and json.loads(truth.read_text()).get("synthetic") is True:
                    evidence.append(f"{truth}: synthetic = true")
    return {"synthetic": bool(evidence), "evidence": evidence[:5]}


def validate(report_dir: Path, signals: pd.DataFrame, all_pairs: pd.DataFrame, mgps: dict, config) -> dict:
    """``quality.validate_outputs`` on the staged tables (raises ValidationFailed on critical problems)."""
    try:
        from pipeline import quality
    except ImportError:  # pragma: no cover
        quality = None
    fn = getattr(quality, "validate_outputs", None)
    if fn is None:
        return {"skipped": "pipeline.quality.validate_outputs is not available", "success": None}
    # expectations/outputs_signals.json requires a non-null ``pt``; group rows carry their key in ``pt_group``, so
    # the validated copy labels them "[group] <name>" (signals.parquet keeps pt null on group rows).
    checked = signals.copy()
    groups = checked["pt"].isna()
    checked.loc[groups, "pt"] = "[group] " + checked.loc[groups, "pt_group"].astype(str)
    return fn(report_dir, checked, all_pairs, mgps, config) or {}


def _validation_brief(v: dict) -> dict:
    keep = ("success", "skipped", "statistics", "critical_failures", "warnings", "validated_at", "data_docs")
    return {k: v[k] for k in keep if k in v}


def _data_docs_link(data_dir: DataDir) -> str | None:
    index = data_dir.validation / "data_docs" / "index.html"
    return "../../validation/data_docs/index.html" if index.exists() else None


@dataclass(frozen=True)
class CurationNotes:
    """What the curation left for a reader: unmapped drug names, name conflicts and duplicate pairs to review
    (None where the curated folder predates the table)."""

    unmapped: pd.DataFrame
    name_conflicts: pd.DataFrame | None
    dup_review: pd.DataFrame | None


def read_curation_notes(cur: Path) -> CurationNotes:
    """The notes of the curated folder ``cur``."""
    from pipeline.reports.dup_review_section import read_review
    from pipeline.reports.names_section import read_conflicts

    return CurationNotes(unmapped=pq.read_table(cur / "unmapped_drugs.parquet").to_pandas(),
                         name_conflicts=read_conflicts(cur), dup_review=read_review(cur))


def compose(*, run_id: str, created_at, data_dir: DataDir, inputs: CuratedInputs, params: dict, config,
            pop: Population, prior: Prior, tables: ReportTables, validation: dict, notes: CurationNotes) -> dict:
    """The manifest of one report (``files`` is filled in by the publisher once every other file is written)."""
    from pipeline.analyses import FILES
    from pipeline.analyses.comparators import sources as comparator_sources

    signals, all_pairs, extra = tables.signals, tables.all_pairs, tables.analyses
    cur_manifest = inputs.manifest
    ingest = ingest_inputs(data_dir, cur_manifest)
    synthetic = detect_synthetic(data_dir, ingest)
    mgps = prior.fit.as_dict()
    return {
        "run_id": run_id,
        "created_at": created_at.isoformat(timespec="seconds"),
        "report_version": REPORT_VERSION,
        "fingerprint": inputs.fingerprint,
        "data_cutoff": pop.quarters[-1],
        "quarters": pop.quarters,
        "synthetic": synthetic["synthetic"],
        "synthetic_evidence": synthetic["evidence"],
        "parameters": params,
        "dating": dating.describe(params, inputs.folder, data_dir),
        "inputs": {
            "curated_manifest_sha256": inputs.manifest_sha256,
            "curated_files_sha256": inputs.files_sha256,
            "curated_created_at": cur_manifest.get("created_at"),
            "curated_fingerprint": cur_manifest.get("fingerprint"),
            "deleted_caseids": cur_manifest.get("deleted_caseids"),
            "ingest": ingest,
        },
        "config": {"sha256": config.sha256, "path": str(config.path), "values": config.as_dict()},
        "case_definition": config.case_definition_version,
        "role_rule": {"exposure_roles": params["roles"],
                      "rule": f"a report is exposed to an ingredient/substance when a drug mapped to it has "
                              f"role_cod in {{{', '.join(params['roles'])}}}"},
        "counting_unit": "de-duplicated report (one caseid after version collapse, deleted cases removed, "
                         "cross-case duplicates excluded); counted once per drug, PT, PT group and pair",
        "duplicate_policy": cur_manifest.get("duplicate_policy", config.as_dict().get("duplicates")),
        "statistics": {"confidence_level": config.confidence_level, "thresholds": config.thresholds.as_dict(),
                       "haldane": False,
                       "multiplicity": "fisher_q = Benjamini-Hochberg q-value of fisher_p over the rows of one "
                                       "substance and one level (PT rows apart from PT-group rows) with a >= 1; "
                                       "NaN where a = 0; none in the trend table"},
        "mgps": {**mgps, "fitted_on": f"all_pairs: every ingredient x PT pair with a >= 1 "
                                      f"({prior.background_pairs:,} pairs), report level",
                 "applied_to": "all_pairs, signals and trend rows (one prior per report): the prior fitted on "
                               "ingredient x PT cells also scores the substance (family included) x PT-group "
                               "rows",
                 "ebgm_outside_eb05_eb95": {"signals": count_outside(signals), "all_pairs": count_outside(all_pairs)},
                 "strata": {k: v for k, v in prior.strata.items() if k not in ("relation", "margins")},
                 "crude": None if prior.fit_crude is prior.fit else {
                     **prior.fit_crude.as_dict(), "use": "ebgm_crude, eb05_crude, eb95_crude of signals and "
                                                         "all_pairs; ebgm, eb05, eb95 of trend"}},
        "trend": {"basis": trend.basis(inputs.folder), "top_pts_per_substance": int(params["trend_top_pts"]),
                  "prior": "the report's MGPS prior (not refitted per quarter)"},
        "validation": _validation_brief(validation),
        "counts": {
            "analysis_population": pop.n_total,
            "exposed_reports": {r["substance"]: int(r["n_drug"]) for r in
                                signals.drop_duplicates("substance")[["substance", "n_drug"]].to_dict("records")},
            "pts": int(signals["pt"].notna().sum() // max(1, len(params["substances"]))),
            "rows": {"signals": len(signals), "all_pairs": len(all_pairs), "trend": len(tables.trend),
                     "funnel": len(tables.funnel)},
            "ingredients": int(all_pairs["substance"].nunique()),
            "unmapped_drug_names": len(notes.unmapped),
            "name_conflict_rows": None if notes.name_conflicts is None else len(notes.name_conflicts),
            "analyses": {name: len(extra.tables[name]) for name in FILES},
            "signals_flagged": {f: int(signals[f].sum()) for f in FLAG_COLUMNS},
        },
        "analyses": {"timings_s": extra.timings_s, "curated_tables_missing": extra.missing,
                     "hcp_occupations": list(config.analyses.hcp_occupations),
                     "comparators": comparator_sources(config)},
        "package_versions": package_versions(),
        "data_docs": _data_docs_link(data_dir),
        "files": {},
    }
