"""``curate(data_dir, config)``: raw quarters -> ``DIR/curated/`` (reports, report_ingredients, report_pts,
funnel, unmapped_drugs, name_conflicts, dup_review, linkage_params.json, the analyses' report_outcomes,
report_substance_drugs, report_indications, report_therapies, manifest.json). DuckDB does the heavy joins out of core; pandas is not used.

The whole folder is written beside ``curated/`` and swapped in at the end (:func:`pipeline.atomic.atomic_dir`),
so readers see the old or the new set, never a mix. A run whose inputs' fingerprint (raw files, ingest records,
config sha256, curation code version) equals the last run's returns ``changed: False`` without work.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline import duck
from pipeline.atomic import atomic_dir
from pipeline.curate import drugs, duplicates, extras, history, linkage, reactions, versions
from pipeline.curate.linkage import review
from pipeline.curate.tables import CURATED
from pipeline.errors import PipelineError
from pipeline.layout import DataDir
from pipeline.settings import Config
from pipeline.vocabulary import FAMILY, SUBSTANCES

log = logging.getLogger("pipeline.curate")

#: bump when a rule changes, so an unchanged input is still re-curated by new code
CURATE_VERSION = "11"

#: every table a curated folder holds (the case-level tables and the version history)
ALL_TABLES = {**CURATED, **history.TABLES}


def curated_dir(data_dir: DataDir, as_of: str | None = None) -> Path:
    """``DIR/curated`` or, for the database as it stood at the end of quarter ``as_of``, ``DIR/curated_asof/<Q>``."""
    return data_dir.curated if as_of is None else data_dir.root / "curated_asof" / str(as_of)


def _ingest_records(data_dir: DataDir, as_of: str | None = None) -> list[dict]:
    out = []
    folder = data_dir.raw / "_ingest"
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if as_of is not None and p.stem > str(as_of):  # YYYYQn labels sort as text
            continue
        raw = p.read_bytes()
        try:
            rec = json.loads(raw)
        except ValueError:
            rec = {}
        out.append({"quarter": rec.get("quarter", p.stem), "era": rec.get("era"), "zip": rec.get("zip"),
                    "zip_sha256": rec.get("zip_sha256"), "record_sha256": hashlib.sha256(raw).hexdigest()})
    return out


def fingerprint(data_dir: DataDir, config: Config, as_of: str | None = None) -> str:
    """sha256 over the raw Parquet files read (path, size, mtime), the ingest records, config and code version."""
    h = hashlib.sha256(f"curate-v{CURATE_VERSION}|{config.sha256}|as_of={as_of}".encode())
    for table in versions.READ_TABLES:
        for p in versions.raw_files(data_dir, table, as_of):
            st = p.stat()
            h.update(f"|{p.relative_to(data_dir.root)}:{st.st_size}:{st.st_mtime_ns}".encode())
    for rec in _ingest_records(data_dir, as_of):
        h.update(f"|{rec['quarter']}:{rec['record_sha256']}".encode())
    decisions = review.review_path(config)
    if decisions is not None:  # the analyst's decisions are an input like the raw files
        h.update(b"|review:" + (decisions.read_bytes() if decisions.is_file() else b"<missing>"))
    return h.hexdigest()


def _age_sql(config: Config) -> str:
    factor = ("CASE upper(trim(age_cod)) WHEN 'DEC' THEN 10.0 WHEN 'YR' THEN 1.0 WHEN 'YEAR' THEN 1.0 "
              "WHEN 'MON' THEN 1.0/12 WHEN 'MONTH' THEN 1.0/12 WHEN 'WK' THEN 7/365.25 WHEN 'WEEK' THEN 7/365.25 "
              "WHEN 'DY' THEN 1/365.25 WHEN 'DAY' THEN 1/365.25 WHEN 'HR' THEN 1/8766.0 WHEN 'HOUR' THEN 1/8766.0 END")
    return (f"CASE WHEN TRY_CAST(trim(age) AS DOUBLE) * {factor} BETWEEN 0 AND {config.max_age_years} "
            f"THEN TRY_CAST(trim(age) AS DOUBLE) * {factor} END")


def _age_band_sql(config: Config) -> str:
    edges = list(config.age_band_edges)
    fmt = lambda x: f"{x:g}"  # noqa: E731
    parts = [f"WHEN age_years < {edges[0]} THEN '<{fmt(edges[0])}'"]
    for lo, hi in zip(edges, edges[1:]):
        parts.append(f"WHEN age_years < {hi} THEN '{fmt(lo)}-{fmt(hi - 1)}'")
    parts.append(f"ELSE '{fmt(edges[-1])}+'")
    return "CASE WHEN age_years IS NULL THEN 'unknown' " + " ".join(parts) + " END"


def _copy(con, sql: str, target: Path, schema, metadata: dict[str, str]) -> int:
    kv = ", ".join(f"'{k}': '{str(v).replace(chr(39), chr(39) * 2)}'" for k, v in metadata.items())
    con.execute(f"COPY ({sql}) TO '{target}' (FORMAT parquet, COMPRESSION zstd, KV_METADATA {{{kv}}})")
    got = pq.read_schema(target)
    got_plain = [(f.name, f.type) for f in got]
    want = [(f.name, f.type) for f in schema]
    if got_plain != want:  # a contract violation is a bug, not a user error
        raise AssertionError(f"{target.name}: schema {got_plain} != contract {want}")
    return pq.read_metadata(target).num_rows


def curate(data_dir: DataDir, config: Config, progress: bool = True, force: bool = False,
           as_of: str | None = None) -> dict:
    """Curate every ingested quarter of ``data_dir`` into ``data_dir.curated``; return a summary dict.

    ``as_of`` (a quarter label): the database as it stood at the end of that quarter - the same rules applied to
    the raw quarters <= it only (deleted lists included), written to ``DIR/curated_asof/<as_of>/`` and kept
    there until its raw inputs, the config or the code change.
    """
    data_dir = DataDir.of(data_dir) if not isinstance(data_dir, DataDir) else data_dir
    if as_of is not None:
        from pipeline.quarters import Quarter

        as_of = str(Quarter.parse(as_of))
    target = curated_dir(data_dir, as_of)
    if not versions.raw_files(data_dir, "DEMO", as_of):
        raise PipelineError(f"nothing to curate: no DEMO tables under {data_dir.raw}"
                            + (f" for quarters <= {as_of}" if as_of else "") + " (run `pipeline ingest` first)")
    fp = fingerprint(data_dir, config, as_of)
    manifest_path = target / "manifest.json"
    if not force and manifest_path.exists():
        try:
            old = json.loads(manifest_path.read_text())
        except ValueError:
            old = {}
        if old.get("fingerprint") == fp and all((target / f"{n}.parquet").exists() for n in ALL_TABLES):
            return {**old.get("summary", {}), "curated_dir": str(target), "changed": False}

    data_dir.root.mkdir(parents=True, exist_ok=True)
    with duck.connect(config.resources, data_dir, label="curate", preserve_insertion_order=False) as con, \
            atomic_dir(target) as out:
        return _curate(con, out, data_dir, config, fp, as_of, progress)


def _curate(con, out: Path, data_dir: DataDir, config: Config, fp: str, as_of: str | None, progress: bool) -> dict:
    bar = tqdm(total=10, desc="curate", unit="step", disable=not progress, leave=False)
    timings: dict[str, float] = {}
    clock = [time.perf_counter()]
    t_start = clock[0]

    def lap(name: str) -> None:
        now = time.perf_counter()
        timings[name] = round(now - clock[0], 2)
        clock[0] = now
        bar.update()
        log.info("curate: %s done in %.1fs (%.1fs so far)", name, timings[name], now - t_start)

    try:
        bar.set_postfix_str("keys")
        files = versions.register_raw(con, data_dir, as_of)
        key_report = versions.check_keys(con, config.null_key_tolerance)
        lap("keys")
        bar.set_postfix_str("versions")
        counts = versions.collapse(con)
        log.info("curate: %s raw DEMO rows -> %s live -> %s kept cases", f"{counts['raw']:,}",
                 f"{counts['live']:,}", f"{counts['kept']:,}")
        history_summary = history.build_spans(con)
        lap("versions")
        with history.all_versions_kept(con):  # one mapping of the final and the superseded versions
            bar.set_postfix_str("drugs")
            drug_summary = drugs.build_report_ingredients(con, config, counted=history.FINAL)
            lap("drugs")
            bar.set_postfix_str("reactions")
            pt_summary = reactions.build_report_pts(con, config, counted=history.FINAL)
            lap("reactions")
        bar.set_postfix_str("extras")
        extras.build_extras(con)
        con.execute("DROP TABLE family_pairs")
        lap("extras")
        bar.set_postfix_str("early write")
        early_rows = _write_early(con, out, config, _metadata(config, fp, as_of))
        lap("early write")
        bar.set_postfix_str("duplicates")
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE rep AS
            SELECT report_id, primaryid, caseversion, quarter, era, fda_dt, init_fda_dt, event_dt,
                   {_age_sql(config)} AS age_years,
                   CASE WHEN sex_raw IN ('M', 'F') THEN sex_raw ELSE 'UNK' END AS sex,
                   reporter_country, occp_cod, mfr_num, mfr_sndr,
                   CASE WHEN wt_kg > 0 AND wt_kg < 400 THEN wt_kg END AS wt_kg,
                   year(coalesce(init_fda_dt, fda_dt))::INTEGER AS receipt_year,
                   coalesce({history.quarter_sql('init_fda_dt')}, f.first_seen) AS first_quarter
            FROM kept JOIN ({history.first_seen_sql()}) f ON f.caseid = kept.report_id""")
        con.execute("DROP TABLE kept")
        dup_summary = duplicates.flag_duplicates(con, config)
        lap("duplicates")
        bar.set_postfix_str("write")
        exclude = "true" if config.duplicates.exclude_flagged_duplicates else "false"
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE reports AS
            SELECT * EXCLUDE (first_quarter), has_drug AND has_pt AND (is_dup_kept OR NOT {exclude}) AS in_analysis,
                   first_quarter FROM (
                SELECT r.report_id, r.primaryid, r.caseversion, r.quarter, r.era, r.fda_dt, r.init_fda_dt,
                       r.event_dt, r.age_years, {_age_band_sql(config)} AS age_band, r.sex, r.reporter_country,
                       r.occp_cod, r.receipt_year,
                       r.report_id IN (SELECT report_id FROM report_ingredients) AS has_drug,
                       r.report_id IN (SELECT report_id FROM report_pts) AS has_pt,
                       f.dup_group_id, f.dup_rule, f.dup_score, coalesce(f.is_dup_kept, true) AS is_dup_kept,
                       r.first_quarter
                FROM rep r LEFT JOIN dup_flags f USING (report_id))""")
        history.finish(con, config.duplicates.exclude_flagged_duplicates)
        funnel, substance_counts = _funnel(con, counts, config, dup_summary.get("linkage", {}).get("skipped"))
        lap("reports")
        summary = _write(con, out, data_dir, config, fp, files, counts, funnel, substance_counts, key_report,
                         drug_summary, pt_summary, dup_summary, timings, as_of, history_summary, early_rows)
        lap("write")
        summary["timings_s"] = timings
    finally:
        bar.close()
    return summary


def _funnel(con, counts: dict, config: Config, linkage_note: str | None = None) -> tuple[list[tuple], dict]:
    n = lambda sql: con.execute(sql).fetchall()[0][0]  # noqa: E731
    kept = counts["kept"]
    with_both = n("SELECT count(*) FROM reports WHERE has_drug AND has_pt")
    analysis = n("SELECT count(*) FROM reports WHERE in_analysis")
    after_rules = n("SELECT count(*) FROM reports r LEFT JOIN dup_flags_rules f USING (report_id) "
                    "WHERE r.has_drug AND r.has_pt AND coalesce(f.is_dup_kept, true)") \
        if config.duplicates.exclude_flagged_duplicates else with_both
    lk = config.duplicates.linkage
    roles = "+".join(config.exposure_roles)
    con.execute("""
        CREATE OR REPLACE TEMP TABLE exposed AS
        SELECT DISTINCT i.report_id, i.substance FROM report_ingredients i
        JOIN reports r USING (report_id)
        WHERE r.in_analysis AND i.is_exposure AND i.substance IS NOT NULL""")
    family = n("SELECT count(DISTINCT report_id) FROM exposed")
    per_sub = dict(con.execute("SELECT substance, count(*) FROM exposed GROUP BY 1").fetchall())
    substance_counts = {s: int(per_sub.get(s, 0)) for s in config.substances}
    substance_counts[FAMILY] = int(family)
    steps = [
        ("raw DEMO rows", counts["raw"], counts["raw"], "every DEMO row of every ingested quarter"),
        ("unusable keys removed", counts["raw"], counts["valid_keys"],
         "caseid/primaryid (or non-LAERS caseversion) null or not a number; within curation.null_key_tolerance"),
        ("exact duplicates removed", counts["valid_keys"], counts["exact"],
         "identical FDA text in every DEMO column; the latest quarter's row is kept"),
        ("primaryid re-ships removed", counts["exact"], counts["reship"],
         "one row per (caseid, primaryid): the latest quarter wins"),
        ("deleted caseids removed", counts["reship"], counts["live"],
         f"caseid on any deleted-case list of any quarter ({counts['deleted_caseids']:,} distinct caseids)"),
        ("older versions removed", counts["live"], kept,
         "one version per caseid: max integer caseversion, then fda_dt, quarter, integer primaryid"),
        ("reports without any drug or any PT", kept, with_both, "no DRUG row or no REAC row in the kept version"),
        ("duplicate-flag exclusions", with_both, after_rules,
         "cross-case duplicates by the exact rules (" + ("+".join(
             r for r in ("aeolus_key", "mfr_num", "relaxed") if getattr(config.duplicates, r)) or "none") + "), "
         + ("non-kept members excluded" if config.duplicates.exclude_flagged_duplicates else "flagged only")),
        ("linkage duplicate exclusions", after_rules, analysis,
         (f"groups joined by probabilistic linkage (match probability >= {lk.threshold:g})"
          + ("" if lk.exclude_flagged and config.duplicates.exclude_flagged_duplicates else ", flagged only")
          if linkage_note is None else f"linkage skipped: {linkage_note}")),
        ("analysis population", analysis, analysis, "reports.in_analysis"),
        ("ketamine-family exposure", analysis, family,
         f"analysis reports naming {'/'.join(SUBSTANCES)} with role {roles}"),
    ]
    return [(i + 1, *s) for i, s in enumerate(steps)], substance_counts


#: the tables final before the duplicate step (output -> the name later steps read it by): written then, and the
#: temp tables replaced by views of the files, so DuckDB's memory is left to what the later steps build (at full
#: scale these tables were about 3/4 of curate's in-memory data, spilled uncompressed). The final and the superseded
#: versions' ingredients and PTs are written from one table each (the superseded under negative ids), not copied
#: apart first.
EARLY = {"report_ingredients": "report_ingredients", "report_pts": "report_pts", "unmapped_drugs": "unmapped_drugs",
         "name_conflicts": "name_conflicts", **{n: n for n in extras.TABLE_NAMES},
         "version_ingredients": "hist_ingredients", "version_pts": "hist_pts"}


def _metadata(config: Config, fp: str, as_of: str | None) -> dict[str, str]:
    return {"faers.config_sha256": config.sha256, "faers.case_definition": config.case_definition_version,
            "faers.exposure_roles": "+".join(config.exposure_roles), "faers.curate_version": CURATE_VERSION,
            "faers.fingerprint": fp, "faers.as_of": as_of or ""}


def _queries(config: Config, funnel: list[tuple] | None = None) -> dict[str, str]:
    """The SELECT writing each output table (the funnel's only once its rows are known)."""
    queries = {
        "reports": "SELECT * FROM reports ORDER BY report_id",
        # the two long tables are not sorted (row order carries no meaning; sorting 10+ M rows costs seconds)
        "report_ingredients": f"SELECT * FROM report_ingredients WHERE {history.FINAL}",
        "report_pts": f"SELECT * FROM report_pts WHERE {history.FINAL}",
        "unmapped_drugs": "SELECT * FROM unmapped_drugs ORDER BY n_reports DESC, n_rows DESC, drugname",
        "name_conflicts": "SELECT * FROM name_conflicts ORDER BY report_id, quarter, drug_seq",
        "dup_review": f"SELECT * FROM dup_review ORDER BY abs(match_weight - "
                      f"{linkage.threshold_weight(config.duplicates.linkage.threshold)!r}), report_id_a, report_id_b",
        **extras.QUERIES,
        **history.QUERIES,
    }
    if funnel is not None:
        values = ", ".join(
            "(" + ", ".join([str(s), "'" + name + "'", str(a), str(b), "'" + reason.replace("'", "''") + "'"]) + ")"
            for s, name, a, b, reason in funnel)
        queries["funnel"] = (f"SELECT col0::BIGINT AS step, col1 AS name, col2::BIGINT AS reports_in, "
                             f"col3::BIGINT AS reports_out, col4 AS reason FROM (VALUES {values}) ORDER BY step")
    return queries


def _write_early(con, out: Path, config: Config, meta: dict[str, str]) -> dict[str, int]:
    """Write the :data:`EARLY` tables into ``out`` and replace each temp table by a view of its file; return the
    row counts."""
    queries, rows = _queries(config), {}
    for name in EARLY:
        rows[name] = _copy(con, queries[name], out / f"{name}.parquet", ALL_TABLES[name], meta)
    for name, temp in EARLY.items():  # the version tables' views have no table of their own to drop
        con.execute(f"DROP TABLE IF EXISTS {temp}")
        con.execute(f"CREATE TEMP VIEW {temp} AS SELECT * FROM read_parquet({duck.sql_str(out / f'{name}.parquet')})")
    return rows


def _write(con, out: Path, data_dir: DataDir, config: Config, fp: str, files, counts, funnel, substance_counts,
           key_report, drug_summary, pt_summary, dup_summary, timings, as_of: str | None = None,
           history_summary: dict | None = None, rows: dict[str, int] | None = None) -> dict:
    """Write the output tables not written yet (``rows``: those written, with their row counts), the manifest and
    the linkage parameters into ``out``; return the summary."""
    target = curated_dir(data_dir, as_of)
    meta = _metadata(config, fp, as_of)
    rows = rows or {}
    records = {r["quarter"]: r for r in _ingest_records(data_dir, as_of)}
    quarters = sorted({p.parent.name.split("=", 1)[1] for t in files.values() for p in t})
    deleted_sha = hashlib.sha256(",".join(str(r[0]) for r in con.execute(
        "SELECT caseid FROM deleted_ids ORDER BY caseid").fetchall()).encode()).hexdigest()
    queries = _queries(config, funnel)
    rows = {name: rows[name] if name in rows else _copy(con, sql, out / f"{name}.parquet", ALL_TABLES[name], meta)
            for name, sql in queries.items()}
    warnings = []
    if drug_summary["unmapped_share"] > config.gates.unmapped_share_max:
        warnings.append(f"unmapped drug rows {drug_summary['unmapped_share']:.1%} exceed "
                        f"thresholds.unmapped_share_max {config.gates.unmapped_share_max:.1%}")
    if pt_summary["configured_pts_never_seen"]:
        warnings.append(f"{len(pt_summary['configured_pts_never_seen'])} configured PT(s) never seen")
    summary = {
        "changed": True,
        "curated_dir": str(target),
        "funnel": [{"step": s, "name": nm, "reports_in": a, "reports_out": b, "reason": r}
                   for s, nm, a, b, r in funnel],
        "kept_cases": counts["kept"],
        "analysis_population": next(b for s, nm, a, b, r in funnel if nm == "analysis population"),
        "substance_reports": substance_counts,
        "rows": rows,
        "outputs": {n: str(target / f"{n}.parquet") for n in queries},
        "drugs": drug_summary,
        "reactions": pt_summary,
        "duplicates": dup_summary,
        "history": history_summary,
        "warnings": warnings,
        "timings_s": timings,
    }
    manifest = {
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "curate_version": CURATE_VERSION,
        "duckdb_version": duckdb.__version__,
        "fingerprint": fp,
        "as_of": as_of,
        "config": {"sha256": config.sha256, "path": str(config.path), "values": config.as_dict()},
        "case_definition": config.case_definition_version,
        "exposure_roles": list(config.exposure_roles),
        "duplicate_policy": config.as_dict()["duplicates"],
        "inputs": [{"quarter": q, "era": records.get(q, {}).get("era"), "zip": records.get(q, {}).get("zip"),
                    "zip_sha256": records.get(q, {}).get("zip_sha256"),
                    "ingest_record_sha256": records.get(q, {}).get("record_sha256")} for q in quarters],
        "deleted_caseids": {"distinct": counts["deleted_caseids"], "sha256": deleted_sha},
        "key_check": key_report,
        "summary": {k: v for k, v in summary.items() if k != "changed"},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    # the linkage model of this run (also inside the manifest's summary), for review and reuse
    (out / "linkage_params.json").write_text(json.dumps(dup_summary.get("linkage", {}), indent=2, default=str)
                                             + "\n")
    log.info("curated %s quarter(s): %s kept cases, %s in analysis, %s ketamine-family", len(quarters),
             f"{counts['kept']:,}", f"{summary['analysis_population']:,}",
             f"{substance_counts[FAMILY]:,}")
    return summary
