"""``pipeline disproportionality``: the statistics engine alone, on any report-level or counts table.

Wiring (in ``pipeline/cli.py``): ``from pipeline.stats.command import register; register(sub)``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.jsonsafe import jsonable
from pipeline.vocabulary import MGPS_LIKELIHOODS

# pandas/pyarrow are imported inside the functions: registering the command must stay cheap

log = logging.getLogger(__name__)

__all__ = ["register", "run", "read_table", "write_output"]

HELP = ("the statistics engine alone: PRR, ROR, chi-square, Fisher, IC and MGPS/EBGM with signal flags, "
        "on a report-level or counts table (CSV or Parquet)")


def register(subparsers) -> Any:
    """Add the ``disproportionality`` subcommand to an argparse ``subparsers`` object."""
    p = subparsers.add_parser("disproportionality", help=HELP, description=HELP)
    p.add_argument("--input", required=True, metavar="FILE", help="input table (.csv or .parquet)")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="output table (.parquet or .csv); a <out>.json sidecar is written")
    p.add_argument("--input-kind", choices=("reports", "counts"), default="reports",
                   help="reports: rows (report_id, drug, event[, strata]), duplicates counted once (default); "
                        "counts: columns drug, event, a, n_drug, n_event, n_total")
    p.add_argument("--mgps-likelihood", choices=MGPS_LIKELIHOODS, default=MGPS_LIKELIHOODS[0],
                   help="MGPS prior likelihood (default openebgm: per-component truncation at N*=1)")
    p.add_argument("--strata", default=None, metavar="COL,...",
                   help="comma-separated stratum columns of a reports input for a stratified expected count")
    p.add_argument("--confidence-level", type=float, default=0.95, metavar="X",
                   help="level of PRR/ROR/IC intervals (0.95)")
    p.add_argument("--haldane", action="store_true",
                   help="add 0.5 to all cells only for a statistic that is otherwise undefined (off by default)")
    p.set_defaults(func=cmd_disproportionality)
    return p


def cmd_disproportionality(args) -> int:
    strata = [c.strip() for c in args.strata.split(",") if c.strip()] if args.strata else None
    summary = run(args.input, args.out, input_kind=args.input_kind, mgps_likelihood=args.mgps_likelihood,
                  strata=strata, confidence_level=args.confidence_level, haldane=args.haldane)
    fit = summary["mgps"]
    state = ("fitted" if fit["published"] else "NOT fitted (EBGM not published)") + (
        f" at a boundary ({'; '.join(fit['boundary'])})" if fit.get("boundary") else "")
    print(f"disproportionality: {summary['rows']:,} (drug, event) rows from {summary['n_total']:,} reports -> "
          f"{args.out}; MGPS {fit['likelihood']} {state}; signals: "
          + ", ".join(f"{k} {v:,}" for k, v in summary["signals"].items()))
    return 0


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_table(path: str | Path):
    """Read CSV or Parquet by extension (a pandas DataFrame); PipelineError with a one-line reason otherwise."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"input file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pq.read_table(path).to_pandas()
        if suffix in (".csv", ".txt", ".tsv"):
            return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", keep_default_na=False,
                               dtype={"drug": str, "event": str}, low_memory=False)
    except (OSError, ValueError, pa.ArrowException, pd.errors.ParserError) as exc:
        raise PipelineError(f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    raise PipelineError(f"unsupported input extension {suffix!r} (use .csv or .parquet)")


def _counts_from_reports(df, strata: list[str] | None):
    import pandas as pd

    from .counting import count_rows

    need = ["report_id", "drug", "event", *(strata or [])]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise PipelineError(f"input: missing column(s) {', '.join(missing)} (has {', '.join(map(str, df.columns))})")
    df = df[need].copy()
    blank = df["report_id"].isna() | (df["report_id"].astype(str).str.strip() == "")
    if blank.any():
        raise PipelineError(f"input: {int(blank.sum())} row(s) with an empty report_id")
    df["drug"] = df["drug"].astype(str)
    df["event"] = df["event"].astype(str)
    keep = (df["drug"].str.strip() != "") & (df["event"].str.strip() != "")
    df = df[keep]
    if df.empty:
        raise PipelineError("input: no rows with a drug and an event")
    rid = df["report_id"]
    if rid.dtype == object:
        rid = rid.astype(str)
    rows = pd.DataFrame({"report_id": rid, "drug": df["drug"], "event": df["event"]})
    st = None
    if strata:
        st = pd.DataFrame({"report_id": rid, **{c: df[c].astype(str) for c in strata}}).drop_duplicates()
    counts = count_rows(rows, strata=st, strata_cols=strata)
    meta = (counts.schema.metadata or {}).get(b"warnings")
    return counts, json.loads(meta) if meta else []




def write_output(res, out: str | Path, meta: dict[str, Any]) -> None:
    """Write Parquet (with key-value metadata ``disproportionality``) or CSV by extension, plus ``<out>.json``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv"):
        raise PipelineError(f"unsupported output extension {suffix!r} (use .parquet or .csv)")
    out.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(jsonable(meta), indent=2, sort_keys=False)
    tmp = out.with_name(out.name + ".tmp")
    if suffix == ".csv":
        res.to_csv(tmp, index=False)
    else:
        table = pa.Table.from_pandas(res, preserve_index=False)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               b"disproportionality": text.encode()})
        # dictionaries only for the name columns (float columns gain nothing and cost time), lz4 over snappy
        names = [f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
        pq.write_table(table, tmp, compression="lz4", use_dictionary=names)
    tmp.replace(out)
    Path(str(out) + ".json").write_text(text + "\n")


def run(input_path, out_path, *, input_kind: str = "reports", mgps_likelihood: str = "openebgm",
        strata: list[str] | None = None, confidence_level: float = 0.95, haldane: bool = False,
        thresholds=None) -> dict[str, Any]:
    """Read, count (reports), compute every statistic, write output + sidecar; returns the sidecar dict."""
    import pyarrow as pa

    from .engine import Thresholds, disproportionality

    t0 = time.perf_counter()
    if Path(out_path).suffix.lower() not in (".parquet", ".pq", ".csv"):
        raise PipelineError(f"unsupported output extension {Path(out_path).suffix.lower()!r} (use .parquet or .csv)")
    input_path = Path(input_path)
    df = read_table(input_path)
    warnings: list[str] = []
    if input_kind == "reports":
        counts, warnings = _counts_from_reports(df, strata)
    elif input_kind == "counts":
        if strata:
            raise PipelineError("--strata needs --input-kind reports")
        counts = df
    else:
        raise PipelineError(f"unknown input kind {input_kind!r}")
    if strata and mgps_likelihood == "zero-inclusive":
        raise PipelineError("zero-inclusive MGPS is not available with a stratified expected count")
    n_rows = counts.num_rows if isinstance(counts, pa.Table) else len(counts)
    if n_rows == 0:
        raise PipelineError("input: no (drug, event) pairs")
    t = thresholds if isinstance(thresholds, Thresholds) else Thresholds.from_mapping(thresholds)
    res, fit = disproportionality(counts, confidence_level=confidence_level, thresholds=t,
                                  mgps_likelihood=mgps_likelihood, haldane=haldane,
                                  check_unique=input_kind != "reports")  # our own counts are unique per pair
    n_total = int(res["n_total"].max()) if len(res) else 0
    meta = {
        "command": "disproportionality",
        "input": {"path": str(input_path), "sha256": _sha256(input_path), "kind": input_kind, "rows": len(df)},
        "counting_unit": "report (each report once per drug, event and pair)" if input_kind == "reports"
        else "as given (counts input)",
        "rows": int(len(res)),
        "n_total": n_total,
        "confidence_level": confidence_level,
        "haldane": bool(haldane),
        "strata": strata or [],
        "thresholds": t.as_dict(),
        "mgps": fit.as_dict(),
        **({"mgps_crude": res.attrs["mgps_fit_crude"].as_dict()} if "mgps_fit_crude" in res.attrs else {}),
        "signals": {k: int(res[k].sum()) for k in ("signal_prr", "signal_ror", "signal_ic", "signal_ebgm")},
        "warnings": warnings + list(fit.warnings),
        "ebgm_outside_eb05_eb95": int(((res["ebgm"] < res["eb05"]) | (res["ebgm"] > res["eb95"])).sum()),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    res.attrs.clear()  # the crude fit object is in the sidecar, not in the Parquet metadata
    write_output(res, out_path, meta)
    return meta
