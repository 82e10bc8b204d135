"""Curated tables: each table's suite, then the cross-table facts (the analysis population, rows of a report
that is not kept, deleted caseids left, the funnel's ends) and the share of unmapped drug rows.

Writes ``DIR/validation/curated/curated.json``.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.layout import DELETED, DataDir
from pipeline.memory import release_memory
from pipeline.quality.checks import CRITICAL, Check, finish, fmt_count, named_check
from pipeline.quality.curated_tables import SCOPE, Jobs, TableJob, frame_checks, read_table, workers_for
from pipeline.quality.gx import GxRun, data_docs_enabled, docs_dir_for
from pipeline.quality.suites import load_suite, suite_columns

CURATED_TABLES = ("reports", "report_ingredients", "report_pts", "funnel", "unmapped_drugs", "name_conflicts")
#: the analyses' tables (OUTC, family drug rows, INDI, THER of the kept version); a curated folder written before
#: them is validated without them (the report then omits the sections that need them)
CURATED_EXTRA_TABLES = ("report_outcomes", "report_substance_drugs", "report_indications", "report_therapies")
#: tables whose own suite runs as a job on the file's columns (the funnel needs a derived column first)
_ROW_SUITE_TABLES = ("reports", "report_ingredients", "report_pts", "unmapped_drugs", "name_conflicts")
#: what the cross-table facts read of a table (its suite's job reads the rest: the whole history's tables are
#: gigabytes)
_CROSS_COLUMNS = {"reports": ["report_id", "in_analysis", "has_drug", "has_pt"], "report_ingredients": ["report_id"],
                  "report_pts": ["report_id"], "name_conflicts": ["report_id"]}
#: child tables held as rows per report (``report_id``, ``n_rows``; report_id unique): all the population and
#: orphan checks need, and a fraction of the report_id column itself (70 M and 52 M ids at full scale)
_COUNTED = ("report_ingredients", "report_pts")


def _cfg_threshold(config, name: str, default: float) -> float:
    """A data-quality limit of ``[thresholds]`` from a Config (or a plain mapping), else ``default``."""
    if config is None:
        return default
    if isinstance(config, dict):
        return float((config.get("thresholds") or config).get(name, default))
    return float(getattr(config.gates, name))


def _raw_totals(data_dir: DataDir) -> dict:
    """DEMO/DRUG rows of every ingested quarter (Parquet footers) and the union of deleted caseids."""
    demo = drug = 0
    deleted = []
    for q in data_dir.ingested_quarters():
        for table in ("DEMO", "DRUG"):
            p = data_dir.raw_part(table, q)
            if p.exists():
                n = pq.read_metadata(p).num_rows
                demo, drug = (demo + n, drug) if table == "DEMO" else (demo, drug + n)
        p = data_dir.raw_part(DELETED, q)
        if p.exists():
            deleted.append(pq.read_table(p, columns=["caseid_int"]).column(0).combine_chunks())
    ids = pc.unique(pa.concat_arrays(deleted).drop_null()) if deleted else pa.array([], pa.int64())
    return {"demo_rows": demo, "drug_rows": drug, "deleted_caseids": ids}


def _rows_per_report(table: pa.Table) -> pa.Table:
    """``(report_id, n_rows)``: rows of ``table`` per report_id (a null report_id is one group, so the orphan
    check still names it; a file without report_id, which its column-set check fails, counts no rows)."""
    if "report_id" not in table.column_names:
        return pa.table({"report_id": pa.array([], pa.int64()), "n_rows": pa.array([], pa.int64())})
    counts = table.select(["report_id"]).group_by("report_id").aggregate([("report_id", "count")])
    return pa.table({"report_id": counts.column("report_id"), "n_rows": counts.column("report_id_count")})


def _sorted_unique(ids: pa.Array) -> np.ndarray:
    """The distinct non-null values of an integer id column, sorted (the reference of :func:`_not_in`)."""
    a = np.sort(ids.drop_null().to_numpy(zero_copy_only=False))
    return a[np.concatenate(([True], a[1:] != a[:-1]))] if len(a) else a


def _not_in(ids: pa.Array, ref: np.ndarray) -> pa.Array:
    """The values of ``ids`` missing from the sorted array ``ref``, nulls included (a null belongs to no report).

    Sorted ids searched in the sorted reference (cache-friendly): at full scale 0.9 s per child table of 16 M
    report ids, against about 4.5 s for ``pc.is_in`` (which also rebuilds its hash set of the 16 M report ids on
    every call) and 5.7 s for the same search with the ids unsorted. The missing ids come out sorted.
    """
    v = np.sort(ids.drop_null().to_numpy(zero_copy_only=False))
    pos = np.searchsorted(ref, v)
    hit = pos < len(ref)
    hit[hit] = ref[pos[hit]] == v[hit]
    missing = pa.array(v[~hit], type=ids.type)
    return pa.concat_arrays([missing, pa.nulls(ids.null_count, ids.type)]) if ids.null_count else missing


def _examples(ids: pa.Array) -> str:
    return ", ".join(map(str, ids.slice(0, 5).to_pylist()))


class _CuratedValidation:
    """The curated tables as read, and the checks found on them so far (in the order they appear in the
    summary: file presence, row-level suites, the analyses' tables, cross-table facts, funnel, drug mapping).

    The tables' own suites run as :class:`~pipeline.quality.curated_tables.Jobs` (worker processes for a big
    folder); this object reads only what the cross-table facts need of them.
    """

    scope = SCOPE

    def __init__(self, data_dir: DataDir, gxr: GxRun):
        self.data_dir, self.gxr = data_dir, gxr
        self.checks: list[Check] = []
        self.suites = {n: load_suite(f"curated_{n}") for n in CURATED_TABLES}
        self.tables: dict[str, pa.Table] = {}
        self.schemas: dict[str, pa.Schema | None] = {}
        self.rows: dict[str, int] = {}
        for name in CURATED_TABLES:
            path = data_dir.curated / f"{name}.parquet"
            if name in _ROW_SUITE_TABLES and path.exists():  # a job runs its suite; only some columns read here
                self.schemas[name], self.rows[name] = pq.read_schema(path), pq.read_metadata(path).num_rows
                continue
            self.tables[name], self.schemas[name] = read_table(data_dir, name, self._columns(name))
            self.rows[name] = self.tables[name].num_rows
            if self.schemas[name] is None:
                self.checks.append(named_check("curated", name, self.scope, "file_present", CRITICAL, False,
                                               details=f"missing {path}"))
        self.extras = [n for n in CURATED_EXTRA_TABLES if (data_dir.curated / f"{n}.parquet").exists()]
        for name in self.extras:
            path = data_dir.curated / f"{name}.parquet"
            self.schemas[name], self.rows[name] = pq.read_schema(path), pq.read_metadata(path).num_rows
        self.extra_ids: dict[str, pa.Array] = {}  # report_id of the analyses' tables present

    def _columns(self, name: str) -> list[str]:
        return list(dict.fromkeys([*suite_columns(self.suites[name]), *_CROSS_COLUMNS.get(name, [])]))

    def jobs(self) -> list[TableJob]:
        """The row-level suites of the tables present, then the analyses' tables' suites."""
        jobs = [TableJob(n, f"curated_{n}", tuple(self._columns(n))) for n in _ROW_SUITE_TABLES if self.has(n)]
        for name in self.extras:
            suite = load_suite(f"curated_{name}")
            jobs.append(TableJob(name, suite["name"], tuple(dict.fromkeys([*suite_columns(suite), "report_id"]))))
        return jobs

    def has(self, *names: str) -> bool:
        return all(self.schemas.get(n) is not None for n in names)

    def gx_table(self, name: str, df, suite: dict | None = None, params: dict | None = None, index=None) -> None:
        """The table's data suite on the frame ``df``, and its column-set suite."""
        self.checks += frame_checks(self.gxr, name, df, self.schemas.get(name), suite or self.suites[name],
                                    params, index)

    def read_row_tables(self) -> None:
        """What the cross-table facts need of the row-suite tables: rows per report of the child tables, a few
        columns of the others."""
        for name in _ROW_SUITE_TABLES:
            if not self.has(name):
                continue
            if name in _COUNTED:
                self.tables[name] = _rows_per_report(read_table(self.data_dir, name, ["report_id"])[0])
            else:
                cols = _CROSS_COLUMNS.get(name) or self._columns(name)
                self.tables[name] = read_table(self.data_dir, name, cols)[0]

    def read_extra_ids(self) -> None:
        """The distinct report ids of the analyses' tables (their orphans come with the cross-table facts)."""
        for name in self.extras:
            col = read_table(self.data_dir, name, ["report_id"])[0]
            if "report_id" in col.column_names:  # else the table's column-set check has failed
                col = col.column("report_id").combine_chunks()
                # distinct ids by sorting (pc.unique hashed 16 M distinct ids in about 4 s); a null is an orphan
                self.extra_ids[name] = pa.concat_arrays([pa.array(_sorted_unique(col), col.type),
                                                         pa.nulls(min(col.null_count, 1), col.type)])

    def check_analysis_population(self) -> None:
        """Every in-analysis report has a drug and a PT row (GX on a per-report count frame built with pyarrow)."""
        reports = self.tables["reports"]
        n_drug, n_pt = self.tables["report_ingredients"], self.tables["report_pts"]  # rows per report
        pop = reports.filter(pc.fill_null(reports.column("in_analysis"), False)).select(
            ["report_id", "has_drug", "has_pt"])
        pop = pop.join(n_drug.rename_columns(["report_id", "n_drug_rows"]), "report_id", join_type="left outer")
        pop = pop.join(n_pt.rename_columns(["report_id", "n_pt_rows"]), "report_id", join_type="left outer")
        df = pop.to_pandas()
        df["n_drug_rows"] = df["n_drug_rows"].fillna(0).astype("int64")
        df["n_pt_rows"] = df["n_pt_rows"].fillna(0).astype("int64")
        self.gx_table("analysis_population", df, load_suite("curated_analysis_population"), index=["report_id"])

    def check_orphans(self, report_ids: np.ndarray) -> None:
        """Every row of a child table belongs to a kept report (``report_ids``: sorted, distinct)."""
        for child in ("report_ingredients", "report_pts", "name_conflicts", *self.extra_ids):
            if not self.has(child):
                continue
            if child in self.extra_ids:
                ids = self.extra_ids[child]
            elif child in _COUNTED:  # already one row per report_id
                ids = self.tables[child].column("report_id").combine_chunks()
            else:
                ids = pc.unique(self.tables[child].column("report_id").combine_chunks())
            orphans = _not_in(ids, report_ids)
            c = named_check("curated", child, self.scope, "report_id_in_reports", CRITICAL, len(orphans) == 0,
                            columns=["report_id"], unexpected=len(orphans), total=len(ids),
                            examples=orphans.slice(0, 5).to_pylist(),
                            notes="every row belongs to a kept report (binary search in the sorted report ids)")
            if not c.success:
                c.details = f"{len(orphans):,} report_id(s) not in reports, e.g. {_examples(orphans)}"
            self.checks.append(c)

    def check_no_deleted_caseid(self, report_ids: pa.Array, raw: dict) -> None:
        deleted = raw["deleted_caseids"]
        left = pc.filter(report_ids, pc.is_in(report_ids, value_set=deleted)) \
            if len(deleted) else pa.array([], pa.int64())
        c = named_check("curated", "reports", self.scope, "no_deleted_caseid", CRITICAL, len(left) == 0,
                        columns=["report_id"], unexpected=len(left), total=len(report_ids),
                        examples=left.slice(0, 5).to_pylist(),
                        notes=f"report_id (= caseid) against the union of raw/deleted of every quarter "
                              f"({len(deleted):,} caseids; pyarrow)")
        if not c.success:
            c.details = f"{len(left):,} deleted caseid(s) still in reports, e.g. {_examples(left)}"
        self.checks.append(c)

    def check_funnel(self, raw: dict) -> None:
        """GX on the steps with the previous step's output beside each row; the funnel's two ends."""
        f = self.tables["funnel"].to_pandas().sort_values("step").reset_index(drop=True)
        f["prev_reports_out"] = f["reports_out"].shift(1)
        if len(f):
            f.loc[0, "prev_reports_out"] = f.loc[0, "reports_in"]  # the first step has no predecessor
        f["prev_reports_out"] = f["prev_reports_out"].astype("int64")
        self.gx_table("funnel", f, index=["step"])
        first = int(f["reports_in"].iloc[0]) if len(f) else None
        c = named_check("curated", "funnel", self.scope, "funnel_starts_with_raw_demo_rows", CRITICAL,
                        first == raw["demo_rows"], columns=["reports_in"], observed=first,
                        notes="step 1 reports_in = DEMO rows of every ingested quarter (Parquet footers)")
        if not c.success:
            c.details = f"step 1 reports_in is {fmt_count(first)}, raw DEMO has {raw['demo_rows']:,} rows"
        self.checks.append(c)
        if not self.has("reports"):
            return
        n_analysis = int(pc.sum(pc.fill_null(self.tables["reports"].column("in_analysis"), False)).as_py() or 0)
        step = f[f["name"] == "analysis population"]
        got = int(step["reports_out"].iloc[0]) if len(step) else None
        c = named_check("curated", "funnel", self.scope, "funnel_ends_at_analysis_population", CRITICAL,
                        got == n_analysis, columns=["reports_out"], observed=got,
                        notes="the 'analysis population' step = reports with in_analysis")
        if not c.success:
            c.details = (f"'analysis population' reports_out is {fmt_count(got)}, reports has "
                         f"{n_analysis:,} in_analysis rows")
        self.checks.append(c)

    def unmapped_share(self, raw: dict) -> tuple[float | None, str | None]:
        """(share of unmapped drug rows, where it comes from): curate's own count from its manifest, else the
        top-N list over raw DRUG rows; ``(None, None)`` when neither is there."""
        try:
            man = json.loads((self.data_dir.curated / "manifest.json").read_text())
            drugs = (man.get("summary") or {}).get("drugs") or {}
            if "unmapped_share" in drugs:
                return float(drugs["unmapped_share"]), "curated/manifest.json summary.drugs.unmapped_share"
        except (OSError, ValueError):
            pass
        if self.has("unmapped_drugs"):
            n_un = int(pc.sum(self.tables["unmapped_drugs"].column("n_rows")).as_py() or 0)
            share = n_un / raw["drug_rows"] if raw["drug_rows"] else 0.0
            return share, "sum(unmapped_drugs.n_rows) / raw DRUG rows (a lower bound: top names only)"
        return None, None

    def check_unmapped_share(self, share: float, basis: str, unmapped_share_max: float) -> None:
        import pandas as pd

        df = pd.DataFrame({"unmapped_share": [share], "basis": [basis]})
        self.gx_table("drug_mapping", df, load_suite("curated_drug_mapping"),
                      params={"unmapped_share_max": unmapped_share_max})


def validate_curated(data_dir: DataDir, config=None, *, unmapped_share_max: float | None = None,
                     data_docs: bool | None = None, docs_dir: str | os.PathLike | None = None,
                     raise_on_critical: bool = True, workers: int | None = None,
                     chunk_rows: int | None = None) -> dict:
    """Validate ``DIR/curated/*.parquet``; write ``validation/curated/curated.json``; raise on critical failures.

    Critical: one row per report_id; no caseid of any deleted-case list left; every in-analysis report has at
    least one drug and one PT; ingredient/PT rows belong to a report; the funnel chains (reports_out of step i =
    reports_in of step i+1), never adds reports, starts with every raw DEMO row and ends at the in-analysis count.
    Warning: the share of unmapped drug rows above ``unmapped_share_max`` (default: config
    ``thresholds.unmapped_share_max``, else 0.05). The tables' own suites run in ``workers`` processes
    (``None``: :func:`~pipeline.quality.curated_tables.workers_for`; 0: in this process), on parts of at most
    ``chunk_rows`` rows (``None``: :data:`~pipeline.quality.curated_tables.CHUNK_ROWS`).
    """
    data_dir = data_dir if isinstance(data_dir, DataDir) else DataDir.of(data_dir)
    if unmapped_share_max is None:
        unmapped_share_max = _cfg_threshold(config, "unmapped_share_max", 0.05)
    t0 = time.perf_counter()
    docs = docs_dir_for(data_dir, docs_dir)
    gxr = GxRun(docs, render=data_docs_enabled(data_docs, default=False))
    v = _CuratedValidation(data_dir, gxr)
    jobs = v.jobs()
    if workers is None:
        workers = workers_for(sum(v.rows.get(j.name, 0) for j in jobs))
    running = Jobs(data_dir, jobs, docs, gxr, workers, chunk_rows)  # the workers import GX meanwhile
    try:
        first, v.checks = v.checks, []
        v.read_row_tables()
        v.read_extra_ids()
        if v.has("reports", "report_ingredients", "report_pts"):
            v.check_analysis_population()
            report_ids = _sorted_unique(v.tables["reports"].column("report_id").combine_chunks())
            v.check_orphans(report_ids)
            raw = _raw_totals(data_dir)
            v.check_no_deleted_caseid(pa.array(report_ids), raw)
        else:
            raw = _raw_totals(data_dir)
        if v.has("funnel"):
            v.check_funnel(raw)
        share, basis = v.unmapped_share(raw)
        if share is not None:
            v.check_unmapped_share(share, basis, unmapped_share_max)
        cross, v.checks = v.checks, []
        v.tables.clear()  # the jobs hold the big tables now: this process lets its columns go first
        v.extra_ids.clear()
        release_memory()
        running.start()
        v.checks = first + [c for j in jobs for c in running.checks(j.name)] + cross
    finally:
        running.close()
    timings = {"validation": round(time.perf_counter() - t0, 3)}
    extra = {"rows": v.rows, "workers": workers, "thresholds": {"unmapped_share_max": unmapped_share_max},
             "unmapped_share": share, "unmapped_share_basis": basis}
    return finish("curated", "curated", v.checks, data_dir.validation / "curated" / "curated.json", extra=extra,
                  gxr=gxr, timings=timings, raise_on_critical=raise_on_critical)
