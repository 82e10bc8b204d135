"""``build_report``: curated tables -> disproportionality statistics -> the report folder ``DIR/reports/<run_id>/``.

What is counted: the unit is the de-duplicated report of the analysis population
(``curated/reports.parquet`` with ``in_analysis``; a cut-off reads the database as it stood then, a from-quarter
keeps the cases first received in it or later: :mod:`pipeline.reports.dating`). A report is *exposed* to an
ingredient or substance when one of its drugs maps to it in one of the exposure roles (config ``[exposure] roles``,
default PS+SS; the ``roles`` parameter overrides). Every report counts once per ingredient/substance, once per PT,
once per PT group and once per pair.

* **Background** (``all_pairs.parquet``): every ingredient x PT pair with a >= 1. The MGPS prior is fitted ONCE on
  it (report level) and the same theta scores every row of the report (background, focus, trend).
* **Focus** (``signals.parquet``): each focus substance (ketamine, esketamine, arketamine, norketamine and
  ``ketamine_family`` = any of them) x every PT of the analysis population (a = 0 included) and x every configured
  PT group (a report counts once for a group if it has any of the group's PTs). Encoding: PT rows have
  ``pt_group`` null, group rows have ``pt`` null.
* **Trend** (``trend.parquet``): :mod:`pipeline.reports.trend`.

The folder is built in ``DIR/.reports-staging/<run_id>/`` (same file system), validated, then renamed into
``DIR/reports/<run_id>/`` in one step; ``DIR/reports/latest`` (a relative symlink, plus a ``LATEST`` text file) is
updated last. A failure anywhere leaves the previous report and ``latest`` untouched.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import platform
import shutil
import zipfile
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import duck
from pipeline.atomic import atomic_path, sha256_file, write_json, write_parquet
from pipeline.errors import PipelineError
from pipeline.jsonsafe import jsonable
from pipeline.layout import DataDir
from pipeline.vocabulary import FAMILY, ROLE_CODES, SUBSTANCES

log = logging.getLogger("pipeline.reports")

#: Bump when the report's content rules change (part of the "changed" fingerprint).
REPORT_VERSION = "1"
GROUP_PREFIX = "\x1fgroup:"  # internal event key of a PT group (cannot collide with PT text)

STAT_COLUMNS = (
    "substance", "pt", "pt_group", "a", "b", "c", "d", "n_total", "expected", "prr", "prr_lo", "prr_hi", "chi2",
    "chi2_yates", "ror", "ror_lo", "ror_hi", "ic", "ic025", "ic975", "ebgm", "eb05", "eb95", "fisher_p",
    "fisher_midp", "signal_prr", "signal_ror", "signal_ic", "signal_ebgm",
)
EXTRA_COLUMNS = ("n_drug", "n_event", "fisher_q")
INT_COLUMNS = ("a", "b", "c", "d", "n_total", "n_drug", "n_event")
FLAG_COLUMNS = ("signal_prr", "signal_ror", "signal_ic", "signal_ebgm")
NAME_COLUMNS = ("substance", "pt", "pt_group")
DICT_STRING = pa.dictionary(pa.int32(), pa.string())


def stats_schema(extra_front: tuple[tuple[str, pa.DataType], ...] = (),
                 extra_back: tuple[tuple[str, pa.DataType], ...] = (), *, drop: tuple[str, ...] = ()) -> pa.Schema:
    """Arrow schema of signals/all_pairs/trend: dictionary-encoded names, int64 counts, float64 stats, bool flags."""
    fields = list(extra_front)
    for c in STAT_COLUMNS + EXTRA_COLUMNS:
        if c in drop:
            continue
        if c in NAME_COLUMNS:
            t = DICT_STRING
        elif c in INT_COLUMNS:
            t = pa.int64()
        elif c in FLAG_COLUMNS:
            t = pa.bool_()
        else:
            t = pa.float64()
        fields.append(pa.field(c, t, nullable=c in ("pt", "pt_group")))
    fields += [pa.field(n, t) for n, t in extra_back]
    return pa.schema(fields)


#: signals and all_pairs: the stratified E that MGPS used and the crude-E MGPS columns (equal to expected/ebgm/
#: eb05/eb95 when ``[mgps] strata`` is empty)
MGPS_STRAT_EXTRA = (("expected_strat", pa.float64()), ("ebgm_crude", pa.float64()), ("eb05_crude", pa.float64()),
                    ("eb95_crude", pa.float64()))

#: signals.parquet only: reports with the pair in which the PT (for a group: any of its PTs present) is also an
#: indication of that report (curated report_pts.is_indication), a confounding-by-indication hint.
SIGNALS_EXTRA = (("a_indication", pa.int64()),)


FUNNEL_SCHEMA = pa.schema([("step", pa.int64()), ("stage", DICT_STRING), ("name", pa.string()),
                           ("reports_in", pa.int64()), ("reports_out", pa.int64()), ("reason", pa.string())])


# ------------------------------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------------------------------

def _package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("ketamine-faers-signals", "numpy", "pandas", "pyarrow", "scipy", "duckdb", "great-expectations",
                 "apache-airflow"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def read_manifest(report_dir: str | os.PathLike) -> dict:
    return json.loads((Path(report_dir) / "manifest.json").read_text())


def latest_report_dir(data_dir: DataDir | str | os.PathLike) -> Path | None:
    """The folder ``DIR/reports/latest`` points at, or None (see :meth:`DataDir.latest_report`)."""
    data_dir = data_dir if isinstance(data_dir, DataDir) else DataDir.of(data_dir)
    return data_dir.latest_report()


def _progress(total: int, enabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a pinned dependency
        tqdm = None
    if tqdm is None or not enabled:
        class _Null:
            def update(self, n=1): ...
            def set_postfix_str(self, s): ...
            def close(self): ...
        return _Null()
    return tqdm(total=total, desc="signals", unit="step", leave=False)


# ------------------------------------------------------------------------------------------------------------
# parameters
# ------------------------------------------------------------------------------------------------------------

def _as_list(v) -> list[str] | None:
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
    subs = _as_list(substances) or list(allowed)
    bad = [s for s in subs if s not in allowed]
    if bad:
        raise PipelineError(f"unknown substance(s) {', '.join(bad)}; choose from {', '.join(allowed)}")
    subs = [s for s in allowed if s in subs]  # config order, family last
    group_names = [g.name for g in config.pt_groups]
    groups = _as_list(pt_groups) or group_names
    bad = [g for g in groups if g not in group_names]
    if bad:
        raise PipelineError(f"unknown PT group(s) {', '.join(bad)}; configured: {', '.join(group_names)}")
    groups = [g for g in group_names if g in groups]
    role_list = [r.upper() for r in (_as_list(roles) or list(config.exposure_roles))]
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


def engine_thresholds(config) -> dict:
    """Config ``[thresholds]`` -> the statistics engine's Thresholds mapping."""
    t = config.thresholds
    return {"prr_min_a": int(t.evans_min_a), "prr_min": float(t.evans_min_prr),
            "chi2_yates_min": float(t.evans_min_chi2_yates), "ror_min_a": int(t.ror_min_a),
            "ror_lo_min": float(t.ror_lo_gt), "ic025_min": float(t.ic025_gt), "eb05_min": float(t.eb05_ge)}


def score(counts: pd.DataFrame, config, fit, *, ebgm_min_a: int | None = None, fit_crude=None) -> pd.DataFrame:
    """Run the statistics engine with the report's fixed prior and thresholds.

    ``signal_ebgm`` additionally needs a >= ``[thresholds] ebgm_min_a`` (the engine's rule is EB05 >= 2 alone).
    With an ``expected`` column (stratified E) ``fit`` is the prior fitted on stratified E and ``fit_crude`` the
    one fitted on crude E (columns ``ebgm_crude``...); without it both equal the crude columns.
    """
    from pipeline.stats import disproportionality

    # multiplicity family: one substance and one level (PT rows apart from PT-group rows)
    level = np.where(counts["event"].astype(str).str.startswith(GROUP_PREFIX).to_numpy(), "\x1fgroup", "\x1fpt")
    family = counts["drug"].astype(str).to_numpy().astype(object) + level
    res, _ = disproportionality(counts, confidence_level=config.confidence_level,
                                thresholds=engine_thresholds(config), mgps_likelihood=fit.likelihood,
                                mgps_fit=fit, q_family=family, mgps_fit_crude=fit_crude)
    if "expected_strat" not in res.columns:  # unstratified: the crude columns are the main ones
        res["expected_strat"] = res["expected"]
        for c in ("ebgm", "eb05", "eb95"):
            res[f"{c}_crude"] = res[c]
    min_a = config.thresholds.ebgm_min_a if ebgm_min_a is None else ebgm_min_a
    res["signal_ebgm"] = res["signal_ebgm"].to_numpy(bool) & (res["a"].to_numpy() >= int(min_a))
    return res


def to_table(df: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """Build an Arrow table with exactly ``schema`` (explicit types; names dictionary-encoded)."""
    arrays = []
    for f in schema:
        col = df[f.name]
        if pa.types.is_dictionary(f.type):
            arr = pa.array(col.astype(object).where(col.notna(), None).tolist(), type=pa.string())
            arrays.append(arr.dictionary_encode().cast(f.type))
        elif pa.types.is_boolean(f.type):
            arrays.append(pa.array(col.to_numpy(bool), type=pa.bool_()))
        elif pa.types.is_integer(f.type):
            arrays.append(pa.array(col.to_numpy(np.int64), type=f.type))
        elif pa.types.is_floating(f.type):
            arrays.append(pa.array(col.to_numpy(np.float64), type=f.type))
        else:
            arrays.append(pa.array(col.astype(object).where(col.notna(), None).tolist(), type=f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


# ------------------------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------------------------

CURATED_FILES = ("reports", "report_ingredients", "report_pts", "funnel", "unmapped_drugs")


def _check_curated(cur: Path) -> None:
    missing = [n for n in CURATED_FILES if not (cur / f"{n}.parquet").exists()]
    if missing:
        raise PipelineError(f"no curated tables in {cur} (missing {', '.join(missing)}.parquet); "
                            f"run `pipeline curate` first")


def _sql_str(s: str) -> str:
    return "'" + str(s).replace("'", "''") + "'"


def _ingest_inputs(data_dir: DataDir, curated_manifest: dict) -> list[dict]:
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


SYNTHETIC_MARKER = b"SYNTHETIC DATA"


def detect_synthetic(data_dir: DataDir, inputs: list[dict] | None = None) -> dict:
    """Is the input a synthetic mirror written by ``pipeline sample``?

    Evidence, any of: a landing zip whose ``README.txt`` starts with "SYNTHETIC DATA" (the generator writes it into
    every zip); an ingest record listing that member; a ``truth.json`` with ``"synthetic": true`` beside the
    ``file://`` source recorded in ``landing/manifest.json``.
    """
    evidence: list[str] = []
    inputs = inputs if inputs is not None else _ingest_inputs(data_dir, {})
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


# ------------------------------------------------------------------------------------------------------------
# counting
# ------------------------------------------------------------------------------------------------------------

def _connect(config, data_dir: DataDir) -> duckdb.DuckDBPyConnection:
    resources = getattr(config, "resources", None)
    duck.configure(resources, data_dir)  # the 2x2 counting opens its own connection with the same limits
    return duck.open_connection(resources, data_dir, label="signals")


def _register_inputs(con, cur: Path, config, params: dict) -> dict:
    """Temp tables ``pop``, ``bg_exp``, ``focus_exp``, ``evt`` (PTs) and ``gevt`` (PT groups); returns counts.

    ``cur`` is the curated folder of the run's database (:func:`pipeline.reports.dating.curated_for`)."""
    from pipeline.curate.reactions import pt_groups_frame

    start = params.get("from_quarter")
    if start and "first_quarter" not in pq.read_schema(cur / "reports.parquet").names:
        raise PipelineError(f"--from-quarter needs curated reports with first_quarter; {cur} predates it "
                            f"(run `pipeline curate`)")
    where_from = f" AND first_quarter >= {_sql_str(start)}" if start else ""
    roles = ", ".join(_sql_str(r) for r in params["roles"])
    con.execute(f"""
        CREATE TEMP TABLE pop AS
        SELECT report_id, quarter FROM read_parquet({_sql_str(cur / 'reports.parquet')})
        WHERE in_analysis{where_from}""")
    con.execute(f"""
        CREATE TEMP TABLE ing AS
        SELECT i.report_id, i.ingredient, i.substance FROM read_parquet({_sql_str(cur / 'report_ingredients.parquet')}) i
        SEMI JOIN pop USING (report_id) WHERE i.role_cod IN ({roles})""")
    con.execute("CREATE TEMP TABLE bg_exp AS SELECT DISTINCT report_id, ingredient AS drug FROM ing "
                "WHERE ingredient IS NOT NULL")
    singles = [s for s in params["substances"] if s != FAMILY]
    parts = []
    if singles:
        parts.append(f"SELECT DISTINCT report_id, substance AS drug FROM ing "
                     f"WHERE substance IN ({', '.join(_sql_str(s) for s in singles)})")
    if FAMILY in params["substances"]:
        fam = ", ".join(_sql_str(s) for s in config.substances)
        parts.append(f"SELECT DISTINCT report_id, '{FAMILY}' AS drug FROM ing WHERE substance IN ({fam})")
    con.execute("CREATE TEMP TABLE focus_exp AS " + " UNION ALL ".join(parts))
    con.execute(f"""
        CREATE TEMP TABLE evt AS
        SELECT DISTINCT p.report_id, p.pt AS event, p.pt_key, p.is_indication FROM read_parquet({_sql_str(cur / 'report_pts.parquet')}) p
        SEMI JOIN pop USING (report_id)""")
    groups = pt_groups_frame(config).to_pandas()
    groups = groups[groups["pt_group"].isin(params["pt_groups"])]
    con.register("cfg_groups", groups)
    con.execute(f"""
        CREATE TEMP TABLE gevt AS
        SELECT e.report_id, {_sql_str(GROUP_PREFIX)} || g.pt_group AS event,
               bool_or(coalesce(e.is_indication, false)) AS is_indication
        FROM evt e JOIN cfg_groups g USING (pt_key) GROUP BY 1, 2""")
    n_total = con.execute("SELECT count(*) FROM pop").fetchall()[0][0]
    # the database's quarters (those of its raw inputs), from the from-quarter on
    quarters = sorted({str(r.get("quarter")) for r in (_read_json(cur / "manifest.json").get("inputs") or [])
                       if r.get("quarter")})
    if not quarters:
        quarters = [r[0] for r in con.execute("SELECT DISTINCT quarter FROM pop ORDER BY 1").fetchall()]
    # (a case can be first received after the last file when its init_fda_dt is later: keep the last quarter)
    quarters = [q for q in quarters if not start or q >= start] or quarters[-1:]
    return {"n_total": int(n_total), "quarters": quarters, "groups": groups}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def count_in_population(exposures: pa.Table, events: pa.Table, n_total: int) -> pa.Table:
    """``stats.count_pairs`` with the universe = the analysis population (``n_total`` reports, every one with a PT)."""
    from pipeline.stats import count_pairs

    return count_pairs(exposures, events, n_total=n_total)


def _focus_counts(con, params: dict, n_total: int) -> pd.DataFrame:
    """Counts for the full focus grid: every focus substance x every PT and every PT group (a = 0 included)."""
    exp = con.sql("SELECT report_id, drug FROM focus_exp").to_arrow_table()
    events = con.sql("SELECT report_id, event FROM evt UNION ALL SELECT report_id, event FROM gevt").to_arrow_table()
    pairs = count_in_population(exp, events, n_total).to_pandas()[["drug", "event", "a"]]
    n_drug = dict(con.execute("SELECT drug, count(*) FROM focus_exp GROUP BY 1").fetchall())
    n_event = con.sql("""SELECT event, count(*)::BIGINT AS n_event FROM evt GROUP BY 1
                         UNION ALL SELECT event, count(*)::BIGINT FROM gevt GROUP BY 1""").df()
    group_events = pd.DataFrame({"event": [GROUP_PREFIX + g for g in params["pt_groups"]]})
    n_event = group_events.merge(n_event, on="event", how="left").pipe(
        lambda g: pd.concat([g, n_event[~n_event["event"].str.startswith(GROUP_PREFIX)]]))
    n_event["n_event"] = n_event["n_event"].fillna(0).astype(np.int64)
    grid = pd.DataFrame({"drug": params["substances"]}).merge(n_event, how="cross")
    grid["n_drug"] = grid["drug"].map(lambda s: int(n_drug.get(s, 0))).astype(np.int64)
    grid = grid.merge(pairs, on=["drug", "event"], how="left")
    grid["a"] = grid["a"].fillna(0).astype(np.int64)
    grid["n_total"] = np.int64(n_total)
    return grid[["drug", "event", "a", "n_drug", "n_event", "n_total"]]


def _indication_counts(con) -> pd.DataFrame:
    """(drug, event, a_indication): focus pairs whose PT is also an indication in the report."""
    return con.sql("""
        SELECT f.drug, e.event, count(*)::BIGINT AS a_indication
        FROM focus_exp f JOIN (SELECT report_id, event FROM evt WHERE is_indication
                               UNION ALL SELECT report_id, event FROM gevt WHERE is_indication) e USING (report_id)
        GROUP BY 1, 2""").df()


def _split_events(df: pd.DataFrame) -> pd.DataFrame:
    """drug/event -> substance/pt/pt_group (PT rows: pt_group null; group rows: pt null)."""
    ev = df["event"].astype(str)
    is_group = ev.str.startswith(GROUP_PREFIX).to_numpy()
    out = df.drop(columns=["drug", "event"]).copy()
    out.insert(0, "substance", df["drug"].astype(str).to_numpy())
    out.insert(1, "pt", pd.Series(np.where(is_group, None, ev.to_numpy()), index=df.index, dtype=object))
    out.insert(2, "pt_group", pd.Series(np.where(is_group, ev.str.slice(len(GROUP_PREFIX)).to_numpy(), None),
                                        index=df.index, dtype=object))
    return out


def order_signals(df: pd.DataFrame, substances: list[str], groups: list[str]) -> pd.DataFrame:
    """Substance in config order; group rows first (config order), then PTs by ROR lower bound, then name."""
    s_rank = {s: i for i, s in enumerate(substances)}
    g_rank = {g: i for i, g in enumerate(groups)}
    key = pd.DataFrame({
        "s": df["substance"].map(s_rank).fillna(len(s_rank)),
        "kind": df["pt"].isna().map({True: 0, False: 1}),
        "g": df["pt_group"].map(g_rank).fillna(0),
        "lo": -df["ror_lo"].fillna(-np.inf).replace(np.inf, 1e300),
        "name": df["pt"].fillna("").str.lower(),
    })
    idx = key.sort_values(["s", "kind", "g", "lo", "name"], kind="mergesort").index
    return df.loc[idx].reset_index(drop=True)


# ------------------------------------------------------------------------------------------------------------
# the build
# ------------------------------------------------------------------------------------------------------------

def _fingerprint(curated_manifest_sha: str, curated_shas: dict, config, params: dict) -> str:
    h = hashlib.sha256(f"report-v{REPORT_VERSION}|{config.sha256}|{curated_manifest_sha}".encode())
    for k in sorted(curated_shas):
        h.update(f"|{k}:{curated_shas[k]}".encode())
    h.update(json.dumps(params, sort_keys=True).encode())
    return h.hexdigest()


def focus_rows(signals: pd.DataFrame) -> list[dict]:
    """The PT-group rows as small JSON-able dicts (what the CLI/XCom carry)."""
    cols = ["substance", "pt_group", "a", "expected", "ror", "ror_lo", "ror_hi", "ic025", "eb05", *FLAG_COLUMNS]
    g = signals[signals["pt"].isna()][cols]
    return [jsonable(r) for r in g.to_dict("records")]


def _update_latest(reports: Path, run_id: str) -> str:
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


def build_report(data_dir: DataDir | str | os.PathLike, config, *, progress: bool = False, substances=None,
                 pt_groups=None, roles=None, mgps_likelihood=None, cutoff_quarter=None, from_quarter=None,
                 force: bool = False, trend_top_pts: int = 5, now: dt.datetime | None = None) -> dict:
    """Compute the statistics and write ``DIR/reports/<run_id>/``; return ``report_dir, run_id, changed, focus``.

    Parameters override the config: ``substances`` (subset of ketamine, esketamine, arketamine, norketamine,
    ketamine_family), ``pt_groups`` (subset of the configured groups), ``roles`` (exposure role codes),
    ``mgps_likelihood``, ``cutoff_quarter`` (the database as it stood at the end of that quarter), ``from_quarter``
    (only cases first received in that quarter or later; :mod:`pipeline.reports.dating`). When the curated
    inputs, config, parameters and report code are those of the latest report, nothing is written and
    ``changed`` is False (``force=True`` rebuilds).
    """
    from pipeline.stats import fit_mgps
    from pipeline.stats.counting import stratified_expected_counts

    from pipeline.reports import dating
    from pipeline.reports import trend as trend_mod

    data_dir = data_dir if isinstance(data_dir, DataDir) else DataDir.of(data_dir)
    params = resolve_params(config, substances=substances, pt_groups=pt_groups, roles=roles,
                            mgps_likelihood=mgps_likelihood, cutoff_quarter=cutoff_quarter, from_quarter=from_quarter)
    params["trend_top_pts"] = int(trend_top_pts)
    cur = dating.curated_for(data_dir, config, params["cutoff_quarter"], progress=progress)
    _check_curated(cur)
    cur_manifest_path = cur / "manifest.json"
    cur_manifest = json.loads(cur_manifest_path.read_text()) if cur_manifest_path.exists() else {}
    cur_manifest_sha = sha256_file(cur_manifest_path) if cur_manifest_path.exists() else None
    curated_shas = {f"{n}.parquet": sha256_file(cur / f"{n}.parquet") for n in CURATED_FILES + trend_mod.HISTORY_FILES
                    if (cur / f"{n}.parquet").exists()}
    fingerprint = _fingerprint(cur_manifest_sha or "", curated_shas, config, params)

    latest = latest_report_dir(data_dir)
    if latest is not None and not force:
        with contextlib.suppress(ValueError, OSError, KeyError):
            old = read_manifest(latest)
            if old.get("fingerprint") == fingerprint:
                sig = pd.read_parquet(latest / "signals.parquet")
                log.info("signals: curated inputs, config and parameters unchanged; latest report kept (%s)",
                         old["run_id"])
                return {"report_dir": str(latest), "run_id": old["run_id"], "changed": False,
                        "focus": focus_rows(sig)}

    now = now or dt.datetime.now(dt.timezone.utc)
    run_id = f"{now:%Y%m%dT%H%M%SZ}-{fingerprint[:8]}"
    final = data_dir.reports / run_id
    i = 1
    while final.exists():
        i += 1
        run_id = f"{now:%Y%m%dT%H%M%SZ}-{fingerprint[:8]}-{i}"
        final = data_dir.reports / run_id

    bar = _progress(7, progress)
    con = _connect(config, data_dir)
    staging_root = data_dir.root / ".reports-staging"
    staging = staging_root / run_id
    try:
        # 1. population and exposures
        bar.set_postfix_str("load")
        info = _register_inputs(con, cur, config, params)
        n_total = info["n_total"]
        if n_total == 0:
            raise PipelineError("signals: the analysis population is empty"
                                + (f" up to {params['cutoff_quarter']}" if params["cutoff_quarter"] else "")
                                + (f" from {params['from_quarter']}" if params["from_quarter"] else "")
                                + f" (curated tables in {cur})")
        quarters = info["quarters"]
        data_cutoff = quarters[-1]
        bar.update()

        # 2. background counts and the MGPS prior (fit once, report level)
        bar.set_postfix_str("background")
        bg_exp = con.sql("SELECT report_id, drug FROM bg_exp").to_arrow_table()
        evt = con.sql("SELECT report_id, event FROM evt").to_arrow_table()
        bg_counts = count_in_population(bg_exp, evt, n_total)
        if bg_counts.num_rows == 0:
            raise PipelineError("signals: no ingredient x PT pair in the analysis population "
                                f"(roles {'+'.join(params['roles'])})")
        bar.update()
        bar.set_postfix_str(f"MGPS fit ({params['mgps_likelihood']})")
        strata = _strata(con, cur, config, params)
        bg_pd = bg_counts.to_pandas()
        if strata["columns"]:
            bg_pd["expected"], info_s = stratified_expected_counts(bg_exp, evt, strata["table"], bg_pd)
            strata.update(info_s)
            fit = fit_mgps(bg_pd, likelihood=params["mgps_likelihood"])
            fit_crude = fit_mgps(bg_counts, likelihood=params["mgps_likelihood"])
        else:
            fit = fit_crude = fit_mgps(bg_counts, likelihood=params["mgps_likelihood"])
        bar.update()

        # 3. statistics
        bar.set_postfix_str("statistics")
        all_pairs = _split_events(score(bg_pd, config, fit, fit_crude=fit_crude))
        focus_counts = _focus_counts(con, params, n_total)
        if strata["columns"]:
            fexp = con.sql("SELECT report_id, drug FROM focus_exp").to_arrow_table()
            fev = con.sql("SELECT report_id, event FROM evt UNION ALL SELECT report_id, event FROM gevt"
                          ).to_arrow_table()
            focus_counts["expected"] = stratified_expected_counts(fexp, fev, strata["table"], focus_counts)[0]
        scored = score(focus_counts, config, fit, fit_crude=fit_crude).merge(
            _indication_counts(con), on=["drug", "event"], how="left")
        scored["a_indication"] = scored["a_indication"].fillna(0).astype(np.int64)
        signals = order_signals(_split_events(scored), params["substances"], params["pt_groups"])
        from pipeline import analyses
        from pipeline.analyses.comparators import sources as comparator_sources

        extra = analyses.run_all(con, cur, config, params, GROUP_PREFIX)
        bar.update()

        # 4. trend
        bar.set_postfix_str("trend")
        # the trend's E is crude (strata by quarter are not tracked): it uses the crude-E prior
        trend = trend_mod.cumulative_trend(con, signals, params, config, fit_crude, quarters,
                                           group_prefix=GROUP_PREFIX, curated=cur)
        bar.update()

        # 5. write the folder in staging
        bar.set_postfix_str("write")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        meta = {"faers.run_id": run_id, "faers.data_cutoff": data_cutoff, "faers.config_sha256": config.sha256,
                "faers.report_version": REPORT_VERSION, "faers.mgps_likelihood": params["mgps_likelihood"],
                "faers.exposure_roles": "+".join(params["roles"])}
        schema = stats_schema()
        write_parquet(to_table(signals, stats_schema(extra_back=SIGNALS_EXTRA + MGPS_STRAT_EXTRA)),
                      staging / "signals.parquet",
                      metadata={**meta, "faers.table": "signals"})
        all_pairs = all_pairs.sort_values(["substance", "pt"], kind="mergesort").reset_index(drop=True)
        write_parquet(to_table(all_pairs, stats_schema(extra_back=MGPS_STRAT_EXTRA)), staging / "all_pairs.parquet",
                      metadata={**meta, "faers.table": "all_pairs"})
        trend_schema = stats_schema((("quarter", DICT_STRING),), drop=("fisher_q",))  # no q-values by quarter
        write_parquet(to_table(trend, trend_schema), staging / "trend.parquet",
                      metadata={**meta, "faers.table": "trend", "faers.trend_basis": trend_mod.basis(cur)})
        funnel = _funnel(con, cur, params, n_total, signals)
        write_parquet(pa.Table.from_pandas(funnel, schema=FUNNEL_SCHEMA, preserve_index=False),
                      staging / "funnel.parquet", metadata={**meta, "faers.table": "funnel"})
        for name in analyses.FILES:
            write_parquet(analyses.to_arrow(extra.tables[name]), staging / f"{name}.parquet",
                          metadata={**meta, "faers.table": name})
        bar.update()

        # 6. validation (quality.validate_outputs; raises ValidationFailed on critical problems)
        bar.set_postfix_str("validate")
        mgps = fit.as_dict()
        validation = _validate(staging, signals, all_pairs, mgps, config)
        inputs = _ingest_inputs(data_dir, cur_manifest)
        synthetic = detect_synthetic(data_dir, inputs)
        unmapped = pq.read_table(cur / "unmapped_drugs.parquet").to_pandas()
        from pipeline.reports.names_section import read_conflicts

        name_conflicts = read_conflicts(cur)
        from pipeline.reports.dup_review_section import read_review

        dup_review = read_review(cur)
        manifest = {
            "run_id": run_id,
            "created_at": now.isoformat(timespec="seconds"),
            "report_version": REPORT_VERSION,
            "fingerprint": fingerprint,
            "data_cutoff": data_cutoff,
            "quarters": quarters,
            "synthetic": synthetic["synthetic"],
            "synthetic_evidence": synthetic["evidence"],
            "parameters": params,
            "dating": dating.describe(params, cur, data_dir),
            "inputs": {
                "curated_manifest_sha256": cur_manifest_sha,
                "curated_files_sha256": curated_shas,
                "curated_created_at": cur_manifest.get("created_at"),
                "curated_fingerprint": cur_manifest.get("fingerprint"),
                "deleted_caseids": cur_manifest.get("deleted_caseids"),
                "ingest": inputs,
            },
            "config": {"sha256": config.sha256, "path": str(config.path), "values": config.as_dict()},
            "case_definition": config.case_definition_version,
            "role_rule": {"exposure_roles": params["roles"],
                          "rule": f"a report is exposed to an ingredient/substance when a drug mapped to it has "
                                  f"role_cod in {{{', '.join(params['roles'])}}}"},
            "counting_unit": "de-duplicated report (one caseid after version collapse, deleted cases removed, "
                             "cross-case duplicates excluded); counted once per drug, PT, PT group and pair",
            "duplicate_policy": cur_manifest.get("duplicate_policy", config.as_dict().get("duplicates")),
            "statistics": {"confidence_level": config.confidence_level, "thresholds": engine_thresholds(config),
                           "ebgm_min_a": int(config.thresholds.ebgm_min_a), "haldane": False,
                           "multiplicity": "fisher_q = Benjamini-Hochberg q-value of fisher_p over the rows of one "
                                           "substance and one level (PT rows apart from PT-group rows) with a >= 1; "
                                           "NaN where a = 0; none in the trend table"},
            "mgps": {**mgps, "fitted_on": f"all_pairs: every ingredient x PT pair with a >= 1 "
                                          f"({bg_counts.num_rows:,} pairs), report level",
                     "applied_to": "all_pairs, signals and trend rows (one prior per report): the prior fitted on "
                                   "ingredient x PT cells also scores the substance (family included) x PT-group "
                                   "rows",
                     "ebgm_outside_eb05_eb95": {"signals": _outside(signals), "all_pairs": _outside(all_pairs)},
                     "strata": {k: v for k, v in strata.items() if k != "table"},
                     "crude": None if fit_crude is fit else {
                         **fit_crude.as_dict(), "use": "ebgm_crude, eb05_crude, eb95_crude of signals and all_pairs; "
                                                       "ebgm, eb05, eb95 of trend"}},
            "trend": {"basis": trend_mod.basis(cur), "top_pts_per_substance": int(trend_top_pts),
                      "prior": "the report's MGPS prior (not refitted per quarter)"},
            "validation": _validation_brief(validation),
            "counts": {
                "analysis_population": n_total,
                "exposed_reports": {r["substance"]: int(r["n_drug"]) for r in
                                    signals.drop_duplicates("substance")[["substance", "n_drug"]].to_dict("records")},
                "pts": int(signals["pt"].notna().sum() // max(1, len(params["substances"]))),
                "rows": {"signals": len(signals), "all_pairs": len(all_pairs), "trend": len(trend),
                         "funnel": len(funnel)},
                "ingredients": int(all_pairs["substance"].nunique()),
                "unmapped_drug_names": len(unmapped),
                "name_conflict_rows": None if name_conflicts is None else len(name_conflicts),
                "analyses": {name: len(extra.tables[name]) for name in analyses.FILES},
                "signals_flagged": {f: int(signals[f].sum()) for f in FLAG_COLUMNS},
            },
            "analyses": {"timings_s": extra.timings_s, "curated_tables_missing": extra.missing,
                         "hcp_occupations": list(config.analyses.hcp_occupations),
                         "comparators": comparator_sources(config)},
            "package_versions": _package_versions(),
            "data_docs": _data_docs_link(data_dir),
            "files": {},
        }
        bar.update()

        # 7. report.html, then the manifest (with the sha256 of every other file) last
        bar.set_postfix_str("html")
        from pipeline.reports.html import render_report

        html_text = render_report(manifest=manifest, signals=signals, trend=trend, funnel=funnel,
                                  unmapped=unmapped, config=config, name_conflicts=name_conflicts,
                                  dup_review=dup_review, analyses=extra)
        with atomic_path(staging / "report.html") as tmp:
            tmp.write_text(html_text, encoding="utf-8")
        manifest["files"] = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                             for p in sorted(staging.iterdir()) if p.is_file() and p.name != "manifest.json"}
        write_json(jsonable(manifest), staging / "manifest.json")
        bar.update()

        # publish: one rename, then latest
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, final)
        how = _update_latest(data_dir.reports, run_id)
    finally:
        bar.close()
        duck.close(con)
        shutil.rmtree(staging, ignore_errors=True)
        with contextlib.suppress(OSError):
            staging_root.rmdir()
    log.info("signals: report %s (%s reports, data through %s; latest via %s)", final, f"{n_total:,}",
             data_cutoff, how)
    return {"report_dir": str(final), "run_id": run_id, "changed": True, "focus": focus_rows(signals)}


def _strata(con, cur: Path, config, params: dict) -> dict:
    """The MGPS strata of the analysis population (``[mgps] strata``): ``columns`` and a ``table`` of
    (report_id, stratum); none with the zero-inclusive likelihood, whose zero cells come from crude margins."""
    cols = list(config.mgps_strata)
    if not cols:
        return {"columns": [], "note": "[mgps] strata = [] (unstratified)"}
    if params["mgps_likelihood"] == "zero-inclusive":
        return {"columns": [], "note": "not stratified: the zero-inclusive likelihood counts zero cells from the "
                                       "crude margins"}
    have = pq.read_schema(cur / "reports.parquet").names
    missing = [c for c in cols if c not in have]
    if missing:
        raise PipelineError(f"[mgps] strata: curated reports have no column {', '.join(missing)} "
                            f"(run `pipeline curate`, or set strata = [])")
    start = params.get("from_quarter")
    where_from = f" AND first_quarter >= {_sql_str(start)}" if start else ""
    key = " || '|' || ".join(f"coalesce(CAST({c} AS VARCHAR), '?')" for c in cols)
    table = con.sql(f"""SELECT report_id, {key} AS stratum FROM read_parquet({_sql_str(cur / 'reports.parquet')})
                        WHERE in_analysis{where_from}""").to_arrow_table()
    return {"columns": cols, "table": table,
            "note": "E = sum over strata s of n_drug,s * n_event,s / n_total,s (a missing value is its own stratum)"}


def _outside(df: pd.DataFrame) -> int:
    """Rows whose EBGM lies outside [EB05, EB95] (possible for a mixture posterior; a counted warning)."""
    g, lo, hi = (df[c].to_numpy(np.float64) for c in ("ebgm", "eb05", "eb95"))
    return int(np.sum((g < lo) | (g > hi)))


def _data_docs_link(data_dir: DataDir) -> str | None:
    index = data_dir.validation / "data_docs" / "index.html"
    return "../../validation/data_docs/index.html" if index.exists() else None


def _validate(report_dir: Path, signals, all_pairs, mgps: dict, config) -> dict:
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


def _funnel(con, cur: Path, params: dict, n_total: int, signals: pd.DataFrame) -> pd.DataFrame:
    """The curated funnel (stage ``curate``) plus the report's own steps (stage ``report``)."""
    from pipeline.reports.dating import CUTOFF_RULE, FROM_RULE

    curated = pq.read_table(cur / "funnel.parquet").to_pandas()
    rows = [{"step": int(r.step), "stage": "curate", "name": r.name, "reports_in": int(r.reports_in),
             "reports_out": int(r.reports_out), "reason": r.reason} for r in curated.itertuples()]
    step = max([r["step"] for r in rows], default=0)
    analysis = con.execute(f"SELECT count(*) FROM read_parquet({_sql_str(cur / 'reports.parquet')}) "
                           f"WHERE in_analysis").fetchall()[0][0]
    cut, start = params["cutoff_quarter"], params.get("from_quarter")
    step += 1
    rows.append({"step": step, "stage": "report", "name": "data cut-off", "reports_in": int(analysis),
                 "reports_out": int(analysis),
                 "reason": (CUTOFF_RULE.format(q=cut) + "; the curate steps above are that database's" if cut else
                            "no cut-off: every quarter of the curated tables")})
    step += 1
    rows.append({"step": step, "stage": "report", "name": "study window", "reports_in": int(analysis),
                 "reports_out": int(n_total),
                 "reason": FROM_RULE.format(q=start) if start else "no from-quarter: every case"})
    fam = signals.loc[signals["substance"] == FAMILY, "n_drug"]
    if len(fam):
        step += 1
        rows.append({"step": step, "stage": "report", "name": "ketamine-family exposure (report)",
                     "reports_in": int(n_total), "reports_out": int(fam.iloc[0]),
                     "reason": f"reports with a ketamine-family drug in role {'+'.join(params['roles'])}"})
    return pd.DataFrame(rows, columns=[f.name for f in FUNNEL_SCHEMA])
