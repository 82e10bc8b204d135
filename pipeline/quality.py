"""Data quality: Great Expectations suites for raw, curated and output tables.

Suites are plain JSON in the repository's ``expectations/`` folder, in the format GX itself writes
(``{"name", "meta", "expectations": [{"type", "kwargs", "severity", "meta"}]}``). They are loaded into an
*ephemeral* GX context on every call (nothing of GX is kept on disk except validation results and the
optional Data Docs), run on only the columns the suite names (``result_format`` BASIC on big tables, SUMMARY
with row identifiers on small derived frames), and turned into a compact summary:

* ``critical`` failures raise one :class:`ValidationFailed` whose message is a single line naming the layer,
  table, quarter, expectation and a few offending values; the summary JSON is written first.
* ``warning`` failures are returned in ``summary["warnings"]`` (one line each) and never raised.

Checks that GX would make slow or awkward (cross-table key coverage, deleted caseids, funnel totals) run with
numpy/pyarrow set operations and appear in the same summary as named checks with a severity and
``"engine": "numpy"`` or ``"pyarrow"`` (GX's own are ``"great_expectations"``), so every check reads the same way
in the JSON and in the exception.

Where things go (``DIR`` = the data directory)::

    DIR/validation/raw/<quarter>.json         validate_raw_quarter
    DIR/validation/curated/curated.json       validate_curated
    <report_dir>/validation.json              validate_outputs (+ DIR/validation/outputs/<run_id>.json)
    DIR/validation/gx_results/                GX's own result JSON (latest per suite and scope), always kept
    DIR/validation/data_docs/index.html       GX Data Docs rendered from them: only when asked for (data_docs=True,
                                              FAERS_DATA_DOCS=1, or build_data_docs(DIR) afterwards). Rendering
                                              the curated and output results took longer than validating them on
                                              the whole history, so no command renders them by default

GX is imported lazily (2-3 s) inside these functions, never at module import.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.atomic import write_json
from pipeline.errors import PipelineError
from pipeline.jsonsafe import jsonable
from pipeline.layout import DELETED, TABLES, DataDir
from pipeline.quarters import Quarter
from pipeline.schemas import raw_schema

log = logging.getLogger(__name__)

def _suites_dir() -> Path:
    """``$FAERS_EXPECTATIONS_DIR``, else the checkout's ``expectations/``, else the copy an installed package ships."""
    if os.environ.get("FAERS_EXPECTATIONS_DIR"):
        return Path(os.environ["FAERS_EXPECTATIONS_DIR"])
    checkout = Path(__file__).resolve().parents[1] / "expectations"
    return checkout if checkout.is_dir() else Path(__file__).resolve().parent / "_suites"


#: Where the suites live (see ``setup.py``: a build copies ``expectations/`` into the package).
EXPECTATIONS_DIR = _suites_dir()

CRITICAL, WARNING = "critical", "warning"

#: Data Docs index lists at most this many (newest) validation results; older pages stay on disk. Building the
#: index costs ~5-10 ms per listed result, so an uncapped index over 90 quarters would cost seconds per run.
DATA_DOCS_INDEX_LIMIT = int(os.environ.get("FAERS_DATA_DOCS_INDEX_LIMIT", "200"))

#: Typical FDA row counts per quarter and era (FDA's published quarterly volumes, widened). Used as *warning* bounds by
#: default and as critical bounds with ``row_bounds="fda"``.
FDA_TYPICAL_ROWS: dict[str, dict[str, tuple[int, int]]] = {
    "faers_b": {"DEMO": (150_000, 800_000), "DRUG": (400_000, 4_000_000), "REAC": (400_000, 3_500_000),
                "OUTC": (50_000, 1_000_000), "RPSR": (1_000, 200_000), "THER": (100_000, 2_000_000),
                "INDI": (200_000, 3_000_000), "DELETED": (0, 1_000_000)},
    "faers_a": {"DEMO": (100_000, 600_000), "DRUG": (300_000, 2_000_000), "REAC": (300_000, 2_000_000),
                "OUTC": (50_000, 600_000), "RPSR": (5_000, 200_000), "THER": (100_000, 1_000_000),
                "INDI": (100_000, 1_500_000), "DELETED": (0, 1_000_000)},
    "laers": {"DEMO": (20_000, 400_000), "DRUG": (50_000, 1_500_000), "REAC": (50_000, 1_500_000),
              "OUTC": (10_000, 500_000), "RPSR": (1_000, 200_000), "THER": (10_000, 800_000),
              "INDI": (10_000, 1_000_000), "DELETED": (0, 1_000_000)},
}
#: Default hard floor (critical): an empty core table fails. RPSR can be legitimately empty in small
#: extracts; DELETED exists only from 2019Q1.
DEFAULT_FLOOR = {"DEMO": 1, "DRUG": 1, "REAC": 1, "OUTC": 1, "RPSR": 0, "THER": 1, "INDI": 1, "DELETED": 0}
#: Default hard ceiling = this many times the typical FDA maximum (a runaway or glued file).
CEILING_FACTOR = 5
#: Rows per DEMO row (critical): FDA quarters have ~4.2 DRUG and ~3.3 REAC rows per report.
DEFAULT_ROWS_PER_REPORT = {"DRUG": (1.0, 15.0), "REAC": (1.0, 15.0)}


class ValidationFailed(PipelineError):
    """A critical expectation failed. ``str(exc)`` is one line; ``exc.summary`` is the full summary."""

    exit_code = 5

    def __init__(self, message: str, summary: dict | None = None):
        super().__init__(message)
        self.summary = summary or {}


# --------------------------------------------------------------------------------------------
# Check records and messages
# --------------------------------------------------------------------------------------------
@dataclass
class Check:
    layer: str                      # raw | curated | outputs
    table: str                      # DEMO, _ingest, reports, signals, ...
    scope: str                      # quarter, "curated", run id
    expectation: str                # GX expectation type or a named check
    severity: str
    success: bool
    engine: str = "great_expectations"
    suite: str | None = None
    columns: list[str] = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    element_count: int | None = None
    observed_value: Any = None
    examples: list = field(default_factory=list)
    details: str = ""
    notes: str = ""

    def where(self) -> str:
        return " ".join(x for x in (self.layer, self.table, self.scope) if x)

    def line(self) -> str:
        cols = f"({', '.join(self.columns)})" if self.columns else ""
        status = "failed" if not self.success else "passed"
        return f"{self.where()}: {self.expectation}{cols} {status}: {self.details or _detail(self)}"

    def as_dict(self) -> dict:
        d = asdict(self)
        d["message"] = self.line() if not self.success else None
        return jsonable(d)


def _fmt_value(v: Any) -> str:
    if isinstance(v, (list, tuple)):
        return "(" + ", ".join(_fmt_value(x) for x in v) + ")"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}={_fmt_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (np.generic,)):
        v = v.item()
    if isinstance(v, float):
        return "NaN" if math.isnan(v) else f"{v:.6g}"
    if v is None:
        return "null"
    if isinstance(v, str):
        return repr(v)
    return str(v)


def _fmt_count(v: Any) -> str:
    if isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and math.isfinite(v) and v == int(v):
        return f"{int(v):,}"
    return _fmt_value(v)


def _detail(c: Check) -> str:
    if c.unexpected_count is not None:
        pct = f" ({c.unexpected_percent:.3g} %)" if c.unexpected_percent is not None else ""
        mostly = c.kwargs.get("mostly")
        allowed = f", more than mostly={mostly} allows" if mostly is not None and not c.success else ""
        ex = f", e.g. {', '.join(_fmt_value(e) for e in c.examples[:5])}" if c.examples else ""
        return f"{c.unexpected_count:,} rows{pct}{allowed}{ex}"
    if c.observed_value is not None:
        return f"observed {_fmt_value(c.observed_value)}"
    return "see the validation JSON"


def _exception_line(failures: list[Check]) -> str:
    first = failures[0].line()
    if len(failures) > 1:
        rest = "; ".join(f"{c.table} {c.expectation}{'(' + ', '.join(c.columns) + ')' if c.columns else ''}"
                         for c in failures[1:4])
        more = f" and {len(failures) - 4} more" if len(failures) > 4 else ""
        first += f" (+{len(failures) - 1} more critical: {rest}{more})"
    return " ".join(first.split())  # one line, whatever the values contain


# --------------------------------------------------------------------------------------------
# Suites
# --------------------------------------------------------------------------------------------
def load_suite(name: str) -> dict:
    """The suite ``expectations/<name>.json`` as a dict (GX's own JSON format)."""
    path = EXPECTATIONS_DIR / f"{name}.json"
    try:
        suite = json.loads(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"expectation suite {name!r} not found ({path})") from None
    except json.JSONDecodeError as exc:
        raise PipelineError(f"expectation suite {path} is not valid JSON: {exc}") from None
    for e in suite.get("expectations", []):
        if e.get("severity", CRITICAL) not in (CRITICAL, WARNING):
            raise PipelineError(f"{path}: severity must be 'critical' or 'warning', not {e.get('severity')!r}")
    return suite


def suite_columns(suite: dict) -> list[str]:
    """Columns the (non-structural) expectations of ``suite`` read."""
    cols: list[str] = []
    for e in suite["expectations"]:
        if e["type"].startswith("expect_table_columns"):
            continue
        kw = e["kwargs"]
        for key in ("column", "column_A", "column_B"):
            if key in kw and kw[key] not in cols:
                cols.append(kw[key])
        for c in kw.get("column_list", []):
            if c not in cols:
                cols.append(c)
    return cols


def _split_structural(suite: dict) -> tuple[dict, dict]:
    """(data suite, column-set suite): table-structure expectations run on an empty frame of the schema."""
    structural = [e for e in suite["expectations"] if e["type"].startswith("expect_table_columns")]
    rest = [e for e in suite["expectations"] if not e["type"].startswith("expect_table_columns")]
    return ({**suite, "expectations": rest}, {**suite, "name": f"{suite['name']}.columns", "expectations": structural})


# --------------------------------------------------------------------------------------------
# The ephemeral GX runtime
# --------------------------------------------------------------------------------------------
def _data_docs_enabled(flag: bool | None, default: bool) -> bool:
    """``data_docs`` argument, else the FAERS_DATA_DOCS environment variable (1/0), else ``default``."""
    if flag is not None:
        return bool(flag)
    env = os.environ.get("FAERS_DATA_DOCS", "").strip().lower()
    if env:
        return env not in ("0", "false", "no", "off")
    return default


class _GxCore:
    """The expensive part of GX: one ephemeral context per process and results folder, with its suites,
    dataframe assets and validation definitions, built once and reused by every later validation.

    Adding a suite, an asset or a validation definition makes GX rewrite its project configuration (as YAML,
    even for an ephemeral context): rebuilding them for every table of every quarter cost more than validating.
    """

    def __init__(self, docs_dir: Path | None):
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        logging.getLogger("great_expectations").setLevel(logging.WARNING)
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        # again: importing GX may reset it; and GX gives some module loggers their own INFO level
        for name in ("great_expectations", "great_expectations.data_context.types.base"):
            logging.getLogger(name).setLevel(logging.WARNING)

        self.gx = gx
        self.ctx = gx.get_context(mode="ephemeral")
        self.ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        self.memory_store = self.ctx.validation_results_store_name
        self.file_store = None
        self.results_dir = None
        if docs_dir is not None:
            self.results_dir = docs_dir.parent / "gx_results"
            self.file_store = "faers_results"
            self.ctx.add_store(self.file_store, {
                "class_name": "ValidationResultsStore",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                                  "base_directory": str(self.results_dir)}})
            self.ctx.add_data_docs_site(site_name="faers", site_config={
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder",
                                       # the index loads every listed result: cap it (pages stay on disk)
                                       "validation_results_limit": DATA_DOCS_INDEX_LIMIT}})
        self.source = self.ctx.data_sources.add_pandas("faers")
        self._suites: dict[str, tuple[str, Any]] = {}            # name -> (content key, GX suite)
        self._definitions: dict[tuple[str, str, str], Any] = {}  # (asset, suite name, content key) -> definition
        self.built = {"suites": 0, "definitions": 0, "rebuilt": 0}
        self._serial = 0

    def definition(self, suite: dict, asset: str, fresh: bool = False):
        """The validation definition of ``suite`` on ``asset`` (a whole-dataframe batch), built once
        (``fresh=True``: build the suite and the definition again)."""
        key = json.dumps(suite, sort_keys=True, default=str)
        name = suite["name"]
        have = self._suites.get(name)
        if fresh:
            self._definitions.pop((asset, name, key), None)
        if have is None or have[0] != key or fresh:  # new, or the same name with other expectations: replace it
            if have is not None:
                self.ctx.suites.delete(name)
            self._suites[name] = (key, self.ctx.suites.add(self.gx.ExpectationSuite(**suite)))
            self.built["suites"] += 1
        dkey = (asset, name, key)
        vd = self._definitions.get(dkey)
        if vd is None:
            self._serial += 1  # GX names must never repeat, also after a rebuild
            n = self._serial
            bd = self.source.add_dataframe_asset(f"{asset}#{n}").add_batch_definition_whole_dataframe("whole")
            vd = self.ctx.validation_definitions.add(
                self.gx.ValidationDefinition(name=f"{name}#{n}", data=bd, suite=self._suites[name][1]))
            self._definitions[dkey] = vd
            self.built["definitions"] += 1
        return vd


_CORES: dict[str, _GxCore] = {}


def _core(docs_dir: Path | None) -> _GxCore:
    """The process's GX core for this results folder (``FAERS_GX_REUSE=0``: a fresh one every time)."""
    key = str(docs_dir.resolve()) if docs_dir is not None else ""
    if os.environ.get("FAERS_GX_REUSE", "1").strip().lower() in ("0", "false", "no", "off"):
        return _GxCore(docs_dir)
    if key not in _CORES:
        _CORES[key] = _GxCore(docs_dir)
    return _CORES[key]


class _Gx:
    """A validation run on the process's ephemeral GX context (:class:`_GxCore`).

    With ``docs_dir``, validation results also go to a file store beside it (``validation/gx_results``, only
    the latest result per suite and scope is kept) and ``render=True`` turns them into Data Docs.
    """

    def __init__(self, docs_dir: Path | None, render: bool = False):
        self.core = _core(docs_dir)
        self.gx, self.ctx = self.core.gx, self.core.ctx
        self.docs_dir = docs_dir
        self.render = bool(render and docs_dir is not None)
        self.memory_store, self.file_store = self.core.memory_store, self.core.file_store
        self.results_dir = self.core.results_dir
        self._n = 0
        self._suite_names: set[str] = set()

    def run(self, suite: dict, df, *, asset: str, params: dict, run_name: str, index_columns: list | None = None,
            persist: bool = True):
        from great_expectations.core.run_identifier import RunIdentifier
        from great_expectations.execution_engine import pandas_execution_engine as pee

        self._n += 1
        persist = persist and self.file_store is not None
        store = self.file_store if persist else self.memory_store
        if self.ctx.variables.validation_results_store_name != store:  # setting it rewrites GX's config
            self.ctx.variables.validation_results_store_name = store
        if persist:  # keep only the latest result per (suite, scope)
            shutil.rmtree(self.results_dir / suite["name"] / run_name, ignore_errors=True)
            self._suite_names.add(suite["name"])
        vd = self.core.definition(suite, asset)
        # GX fingerprints every DataFrame under 1 GB with a full hash_pandas_object (0.4 s per 2 M rows) only
        # to label the batch; we label batches ourselves, so skip it for the duration of the run.
        saved = pee.HASH_THRESHOLD
        pee.HASH_THRESHOLD = 0
        try:
            # BASIC (counts + up to 20 offending values) costs half of SUMMARY on big tables; SUMMARY only
            # where rows need naming (small frames: ingest record, funnel, statistics).
            fmt = {"result_format": "BASIC", "partial_unexpected_count": 20}
            if index_columns:
                fmt = {"result_format": "SUMMARY", "partial_unexpected_count": 10,
                       "unexpected_index_column_names": list(index_columns)}
            kwargs = dict(batch_parameters={"dataframe": df}, expectation_parameters=params, result_format=fmt,
                          run_id=RunIdentifier(run_name=run_name))
            try:
                return vd.run(**kwargs)
            except ValueError as exc:  # GX's ResourceFreshnessAggregateError
                # GX now and then holds a reused suite for changed (a freshness check against its in-memory
                # store): build the suite and definition again and run once more
                if "Freshness" not in type(exc).__name__:
                    raise
                self.core.built["rebuilt"] += 1
                return self.core.definition(suite, asset, fresh=True).run(**kwargs)
        finally:
            pee.HASH_THRESHOLD = saved

    def build_docs(self) -> str | None:
        """Render every stored result that has no page yet (incl. this call's), this call's suites, the index."""
        if not self.render:
            return None
        return _render_docs(self.ctx, self.docs_dir, self.file_store, self._suite_names)


def _render_docs(ctx, docs_dir: Path, store_name: str, suite_names: Iterable[str] = ()) -> str:
    from great_expectations.data_context.types.resource_identifiers import ExpectationSuiteIdentifier

    ctx.variables.validation_results_store_name = store_name
    keys = ctx.validation_results_store.list_keys()
    missing = [k for k in keys if not docs_dir.joinpath("validations", *k.to_tuple()[:-1],
                                                        f"{k.to_tuple()[-1]}.html").exists()]
    ids = missing + [ExpectationSuiteIdentifier(name=n) for n in sorted(suite_names)]
    # an empty list would mean "rebuild every page" to GX: name a resource that does not exist instead
    ctx.build_data_docs(site_names=["faers"],
                        resource_identifiers=ids or [ExpectationSuiteIdentifier(name="__nothing_new__")])
    return str(docs_dir / "index.html")


def build_data_docs(data_dir: DataDir | str | os.PathLike) -> str | None:
    """Render Data Docs for every stored validation result (``validation/gx_results``) without a page yet, and
    the index ``validation/data_docs/index.html``. Cheap when nothing is new; returns the index path."""
    data_dir = data_dir if isinstance(data_dir, DataDir) else DataDir.of(data_dir)
    docs = data_dir.validation / "data_docs"
    if not (data_dir.validation / "gx_results").is_dir():
        return None
    gxr = _Gx(docs, render=True)
    return gxr.build_docs()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001
        return False


def _checks_from_result(res, *, layer: str, table: str, scope: str, suite: dict) -> list[Check]:
    notes = {json.dumps(e["kwargs"], sort_keys=True, default=str): (e.get("meta") or {}).get("notes", "")
             for e in suite["expectations"]}
    out = []
    for r in res.results:
        cfg = r.expectation_config
        kw = {k: v for k, v in dict(cfg.kwargs).items() if k != "batch_id"}
        cols = [kw[k] for k in ("column", "column_A", "column_B") if k in kw]
        result = r.result or {}
        c = Check(layer=layer, table=table, scope=scope, expectation=cfg.type,
                  severity=str(getattr(cfg.severity, "value", cfg.severity) or CRITICAL),
                  success=bool(r.success), suite=suite["name"], columns=cols, kwargs=jsonable(kw))
        c.notes = notes.get(json.dumps(jsonable(kw), sort_keys=True, default=str), "")
        if r.exception_info and r.exception_info.get("raised_exception"):
            c.success = False
            c.details = f"GX error: {str(r.exception_info.get('exception_message'))[:200]}"
        if "unexpected_count" in result:
            c.unexpected_count = int(result.get("unexpected_count") or 0)
            c.unexpected_percent = result.get("unexpected_percent")
            c.element_count = result.get("element_count")
            counts = result.get("partial_unexpected_counts") or []
            if counts:
                c.examples = [x["value"] for x in counts]
            else:  # BASIC: the first offending values, distinct, in order
                seen: list = []
                for v in result.get("partial_unexpected_list") or []:
                    if not any(_same(v, w) for w in seen):
                        seen.append(v)
                c.examples = seen
            idx = result.get("partial_unexpected_index_list") or []
            index_cols = result.get("unexpected_index_column_names") or []
            if idx and index_cols:  # name the row (e.g. table='DRUG') next to the offending values
                c.examples = [{k: row[k] for k in [*index_cols, *cols] if k in row} for row in idx]
        if "observed_value" in result:
            c.observed_value = result["observed_value"]
        if cfg.type == "expect_table_row_count_to_be_between" and not c.details:
            c.details = (f"observed {_fmt_count(result.get('observed_value'))} rows, expected "
                         f"{_fmt_count(kw.get('min_value'))}..{_fmt_count(kw.get('max_value'))}")
        elif cfg.type == "expect_table_columns_to_match_set" and not c.details:
            mm = (result.get("details") or {}).get("mismatched") or {}
            c.details = (f"missing {mm.get('missing') or []}, unexpected {mm.get('unexpected') or []}"
                         if mm else f"observed {result.get('observed_value')}")
        elif cfg.type == "expect_column_distinct_values_to_contain_set" and not c.details:
            c.details = f"missing {result.get('partial_missing_list') or result.get('details')}"
        out.append(c)
    return out


def _named(layer, table, scope, name, severity, ok, *, columns=(), unexpected=None, total=None, examples=(),
           details="", notes="", kwargs=None, observed=None, engine="pyarrow") -> Check:
    c = Check(layer=layer, table=table, scope=scope, expectation=name, severity=severity, success=bool(ok),
              engine=engine, columns=list(columns), kwargs=kwargs or {}, notes=notes, observed_value=observed)
    if unexpected is not None:
        c.unexpected_count = int(unexpected)
        c.element_count = int(total) if total is not None else None
        c.unexpected_percent = (100.0 * unexpected / total) if total else None
        c.examples = list(examples)[:10]
    c.details = details
    return c


def _finish(layer: str, scope: str, checks: list[Check], target: Path, *, extra: dict, gxr: _Gx | None,
            timings: dict, raise_on_critical: bool, also_write: Iterable[Path] = ()) -> dict:
    t = time.perf_counter()
    docs = None
    if gxr is not None and gxr.docs_dir is not None:
        try:
            docs = gxr.build_docs()
        except Exception as exc:  # Data Docs are a convenience; never fail validation because of them
            log.warning("GX Data Docs not built: %s", exc)
    timings["data_docs"] = round(time.perf_counter() - t, 3)
    # GX findings on a table come before the cross-table consequences they cause (orphans, coverage).
    critical = sorted((c for c in checks if not c.success and c.severity == CRITICAL),
                      key=lambda c: c.engine != "great_expectations")
    warnings = [c for c in checks if not c.success and c.severity != CRITICAL]
    summary = {
        "layer": layer,
        "scope": scope,
        **extra,
        "success": not critical,
        "validated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "statistics": {"checks": len(checks), "passed": sum(c.success for c in checks),
                       "critical_failed": len(critical), "warnings": len(warnings),
                       "gx_expectations": sum(c.engine == "great_expectations" for c in checks),
                       "set_operation_checks": sum(c.engine != "great_expectations" for c in checks)},
        "critical_failures": [c.line() for c in critical],
        "warnings": [c.line() for c in warnings],
        "seconds": timings,
        "data_docs": docs,
        "checks": [c.as_dict() for c in checks],
    }
    for path in (target, *also_write):
        write_json(summary, path)
    for c in warnings:
        log.warning("%s", c.line())
    if critical and raise_on_critical:
        raise ValidationFailed(_exception_line(critical), summary)
    return summary


def _docs_dir(data_dir: DataDir, docs_dir: str | os.PathLike | None) -> Path:
    if docs_dir is not None:
        return Path(docs_dir)
    root = data_dir.root
    if root.parent.name == ".staging":  # ingest validates a staged quarter: publish docs in the real tree
        root = root.parent.parent
    return DataDir(root).validation / "data_docs"


# --------------------------------------------------------------------------------------------
# Raw tables, per quarter
# --------------------------------------------------------------------------------------------
def raw_suite_name(table: str, era: str) -> str:
    """``raw_demo_faers_b``, ``raw_reac_faers``, ``raw_outc_laers``, ``raw_deleted`` ..."""
    family = "laers" if era == "laers" else "faers"
    for name in (f"raw_{table.lower()}_{era}", f"raw_{table.lower()}_{family}", f"raw_{table.lower()}"):
        if (EXPECTATIONS_DIR / f"{name}.json").exists():
            return name
    raise PipelineError(f"no expectation suite for raw {table} ({era}) in {EXPECTATIONS_DIR}")


def _row_params(table: str, era: str, row_bounds, n_demo: int, rows_per_report: dict) -> dict:
    typ_lo, typ_hi = FDA_TYPICAL_ROWS[era][table]
    floor, ceiling = DEFAULT_FLOOR[table], typ_hi * CEILING_FACTOR
    if row_bounds == "fda":
        floor, ceiling = max(typ_lo, DEFAULT_FLOOR[table]), typ_hi
    elif isinstance(row_bounds, dict) and table in row_bounds:
        lo, hi = row_bounds[table]
        floor = DEFAULT_FLOOR[table] if lo is None else int(lo)
        ceiling = typ_hi * CEILING_FACTOR if hi is None else int(hi)
    elif row_bounds not in (None, "default") and not isinstance(row_bounds, dict):
        raise PipelineError(f"row_bounds must be None, 'fda' or {{table: (min, max)}}, not {row_bounds!r}")
    params = {"rows_floor": floor, "rows_ceiling": ceiling, "rows_typical_min": typ_lo, "rows_typical_max": typ_hi}
    lo_r, hi_r = rows_per_report.get(table, (0.0, math.inf))
    params["rows_rel_min"] = int(math.floor(lo_r * n_demo))
    params["rows_rel_max"] = int(math.ceil(hi_r * n_demo)) if math.isfinite(hi_r) else 10**12
    return params


def _code_columns(suite: dict) -> set[str]:
    """Columns that only code-list (in-set) expectations read: read as dictionaries."""
    by_col: dict[str, set[str]] = {}
    for e in suite["expectations"]:
        if "column" in e["kwargs"]:
            by_col.setdefault(e["kwargs"]["column"], set()).add(e["type"])
    return {c for c, types in by_col.items() if types == {"expect_column_values_to_be_in_set"}}


def _file_facts(data_dir: DataDir, table: str, quarter: Quarter) -> tuple[pa.Schema, int | None]:
    """(the file's schema, its row count), from the Parquet footer; the canonical schema and ``None``
    when there is no file. The structural checks are about the file on disk, whoever holds the rows."""
    path = data_dir.raw_part(table, quarter)
    if not path.exists():
        return raw_schema(table), None
    meta = pq.read_metadata(path)
    return meta.schema.to_arrow_schema(), meta.num_rows


def _read_raw(data_dir: DataDir, table: str, quarter: Quarter, columns: list[str],
              code_columns: Iterable[str] = ()) -> pa.Table:
    """The needed columns of one raw table from Parquet (an empty table when there is no file)."""
    path = data_dir.raw_part(table, quarter)
    if not path.exists():
        return raw_schema(table).empty_table().select(columns)
    schema = pq.read_schema(path)
    # code-list columns as dictionaries (pandas Categorical): faster to read and to filter inside GX; free
    # text (lengths) and dates (regex) stay plain strings, which GX handles faster than categoricals
    wanted = [c for c in columns if c in schema.names]
    as_dict = [c for c in wanted if c in set(code_columns) and pa.types.is_string(schema.field(c).type)]
    return pq.read_table(path, columns=wanted, read_dictionary=as_dict)


def _to_pandas(t: pa.Table, columns: list[str]):
    import pandas as pd

    # text stays in Arrow (pd.ArrowDtype): no Python string per value (a third of the validation time
    # on a real-scale quarter), and GX's null, set and length checks run as Arrow kernels
    df = t.to_pandas(types_mapper=lambda typ: pd.ArrowDtype(typ) if pa.types.is_string(typ) else None)
    for c in columns:  # a column the file lacks: present but all-null, so the expectation fails, not GX
        if c not in df.columns:
            df[c] = pd.Series([None] * len(df), dtype=object)
    return df


def _id_numpy(arr: pa.Array) -> tuple[np.ndarray, int]:
    """(non-null values as int64 numpy, number of nulls)."""
    nulls = arr.null_count
    if nulls:
        arr = arr.drop_null()
    return arr.to_numpy(zero_copy_only=False).astype(np.int64, copy=False), nulls


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """np.unique without numpy 2's hash path (10x slower here on 450 k int64)."""
    a = np.sort(a)
    return a[np.r_[True, a[1:] != a[:-1]]] if len(a) else a


def _coverage_checks(scope: str, demo_ids: pa.Array, child_ids: dict[str, pa.Array], *,
                     orphan_critical: float, coverage_warn: float, coverage_critical: float,
                     orphan_min_count: int = 0) -> list[Check]:
    """primaryid of child rows in DEMO, and DEMO reports with DRUG/REAC rows (numpy sort + searchsorted).

    Child rows come in runs per report, so runs are collapsed first: ~0.1 s for a real-scale quarter. The orphan
    share is critical only for tables of at least ``orphan_min_rows`` rows: in a small quarter one quarantined DEMO
    line orphans a few child rows and already exceeds 0.1 %, which is noise, not a broken extract.
    """
    out = []
    demo = _sorted_unique(_id_numpy(demo_ids)[0])
    covered_by: dict[str, np.ndarray] = {}
    for table, ids in child_ids.items():
        vals, n_null = _id_numpy(ids)
        n = len(vals) + n_null
        if len(vals):
            starts = np.flatnonzero(np.r_[True, vals[1:] != vals[:-1]])
            run_vals = vals[starts]
            run_len = np.diff(np.r_[starts, len(vals)])
            if len(run_vals) > 1 and not bool(np.all(run_vals[1:] >= run_vals[:-1])):
                order = np.argsort(run_vals)  # sorted probes make searchsorted cache-friendly
                run_vals, run_len = run_vals[order], run_len[order]
            pos = np.searchsorted(demo, run_vals)
            found = np.zeros(len(run_vals), dtype=bool)
            ok = pos < len(demo)
            found[ok] = demo[pos[ok]] == run_vals[ok]
            cov = np.zeros(len(demo), dtype=bool)
            cov[pos[found]] = True
            covered_by[table] = cov
            n_orphan = int(run_len[~found].sum()) + n_null
            examples = [int(x) for x in _sorted_unique(run_vals[~found])[:5]]
        else:
            covered_by[table] = np.zeros(len(demo), dtype=bool)
            n_orphan, examples = n_null, []
        if n_null:
            examples = [None, *examples][:5]
        share = n_orphan / n if n else 0.0
        # DRUG/REAC feed the statistics: orphans there stop the run above the limit; elsewhere they warn.
        levels = ((WARNING, 0.0), (CRITICAL, orphan_critical)) \
            if table in ("DRUG", "REAC") and n_orphan >= orphan_min_count else ((WARNING, 0.0),)
        for sev, limit in levels:
            c = _named("raw", table, scope, "primaryid_in_demo", sev, share <= limit, engine="numpy",
                       columns=["primaryid_int"], unexpected=n_orphan, total=n, examples=examples,
                       kwargs={"max_orphan_share": limit},
                       notes="every child row's primaryid is a DEMO primaryid of the quarter "
                             "(numpy set operations; GX has no cross-table expectation)")
            if not c.success:
                c.details = (f"{n_orphan:,} of {n:,} rows ({100 * share:.3g} %, limit {100 * limit:.3g} %) "
                             f"have a primaryid missing from DEMO, e.g. {', '.join(map(str, examples))}")
            out.append(c)
    for table in ("DRUG", "REAC"):
        if table not in covered_by:
            continue
        n_demo = len(demo)
        cov = covered_by[table]
        n_cov = int(cov.sum())
        share = n_cov / n_demo if n_demo else 1.0
        missing = [int(x) for x in demo[~cov][:5]]
        for sev, limit in ((WARNING, coverage_warn), (CRITICAL, coverage_critical)):
            c = _named("raw", "DEMO", scope, f"demo_has_{table.lower()}", sev, share >= limit, engine="numpy",
                       columns=["primaryid_int"], unexpected=n_demo - n_cov, total=n_demo, examples=missing,
                       kwargs={"min_share": limit},
                       notes=f"share of DEMO reports with at least one {table} row (numpy); a truncated "
                             f"{table} file fails")
            if not c.success:
                c.details = (f"only {100 * share:.3g} % of {n_demo:,} reports have a {table} row (limit "
                             f"{100 * limit:.3g} %), e.g. missing for {', '.join(map(str, missing))}")
            out.append(c)
    return out


def _ingest_frame(record: dict, era: str, parquet_rows: dict[str, int], quarantine_min_lines: int = 10_000):
    import pandas as pd

    written: dict[str, int] = {}
    for f in record.get("files", []):
        written[f["table"]] = written.get(f["table"], 0) + int(f.get("rows_written", 0))
    rows = []
    for f in record.get("files", []):
        table = f["table"]
        expected = set(load_suite(raw_suite_name(table, era))["meta"]["expected_columns_by_era"].get(era, []))
        missing = sorted(expected & set(f.get("columns_missing") or []))
        lines = int(f.get("data_lines", 0))
        rows.append({
            "table": table, "member": f.get("member", ""), "data_lines": lines,
            "rows_accounted": int(f.get("rows_written", 0)) + int(f.get("quarantined", 0)),
            "table_rows_written": written[table], "parquet_rows": parquet_rows.get(table, 0),
            "quarantine_rate": (int(f.get("quarantined", 0)) / lines) if lines else 0.0,
            "quarantine_rate_large": ((int(f.get("quarantined", 0)) / lines) if lines >= quarantine_min_lines
                                      else np.nan),
            "expected_columns_missing": ",".join(missing),
        })
    cols = ["table", "member", "data_lines", "rows_accounted", "table_rows_written", "parquet_rows",
            "quarantine_rate", "quarantine_rate_large", "expected_columns_missing"]
    return pd.DataFrame(rows, columns=cols)


def validate_raw_quarter(data_dir: DataDir, quarter: Quarter | str, *, tables: dict[str, pa.Table] | None = None,
                         **options) -> dict:
    """Validate one ingested quarter; write ``validation/raw/<quarter>.json``; raise on critical failures.

    ``tables``: the quarter's Arrow tables if the caller still holds them (skips re-reading Parquet).
    ``options``: the thresholds of :class:`RawQuarterValidation`.
    """
    validation = RawQuarterValidation(data_dir, quarter, **options)
    for table in TABLES + (DELETED,):
        validation.add(table, (tables or {}).get(table))
    return validation.finish()


class RawQuarterValidation:
    """The raw checks of one quarter, table by table as tables become ready, then the cross-table ones.

    Ingest hands each table over as soon as it is written, so the GX suites of the first tables run while
    later ones are still being parsed (GX is Python; parsing mostly runs without the GIL).

    ``row_bounds``: ``None`` = hard floor > 0 (RPSR, DELETED may be empty) and a ceiling, with FDA's typical
    range as a warning; ``"fda"`` = FDA's typical range is critical (use on real FDA quarters);
    ``{"DEMO": (min, max), ...}`` = explicit critical bounds. DRUG/REAC rows per DEMO row are always checked
    (``rows_per_report``). ``quarantine_warn``/``quarantine_critical``: quarantined share of a file's data
    lines (the critical one only for files of at least ``quarantine_min_lines`` lines). ``orphan_critical``:
    share of DRUG/REAC rows whose primaryid is not in DEMO that stops the run, once there are at least
    ``orphan_min_count`` such rows.
    """

    # row-count expectations relative to DEMO: these tables wait for DEMO's row count
    _NEEDS_DEMO = ("DRUG", "REAC")

    def __init__(self, data_dir: DataDir | str | os.PathLike, quarter: Quarter | str, *,
                 row_bounds: dict | str | None = None, rows_per_report: dict | None = None,
                 quarantine_warn: float = 1e-4, quarantine_critical: float = 1e-3,
                 quarantine_min_lines: int = 10_000, orphan_critical: float = 1e-3, orphan_min_count: int = 50,
                 coverage_warn: float = 0.99, coverage_critical: float = 0.90,
                 data_docs: bool | None = None, docs_dir: str | os.PathLike | None = None,
                 raise_on_critical: bool = True):
        self.data_dir = data_dir if isinstance(data_dir, DataDir) else DataDir.of(data_dir)
        self.quarter = quarter if isinstance(quarter, Quarter) else Quarter.parse(str(quarter))
        self.era, self.scope = self.quarter.era, str(self.quarter)
        self.row_bounds = row_bounds
        self.rows_per_report = {**DEFAULT_ROWS_PER_REPORT, **(rows_per_report or {})}
        self.thresholds = {"row_bounds": row_bounds if row_bounds is not None else "default",
                           "rows_per_report": self.rows_per_report, "quarantine_warn": quarantine_warn,
                           "quarantine_critical": quarantine_critical,
                           "quarantine_min_lines": quarantine_min_lines, "orphan_critical": orphan_critical,
                           "orphan_min_count": orphan_min_count,
                           "coverage_warn": coverage_warn, "coverage_critical": coverage_critical}
        self.raise_on_critical = raise_on_critical
        self.timings: dict[str, float] = {}
        self._t0 = time.perf_counter()
        t = time.perf_counter()
        self.gxr = _Gx(_docs_dir(self.data_dir, docs_dir), render=_data_docs_enabled(data_docs, default=False))
        self.timings["gx_context"] = round(time.perf_counter() - t, 3)
        self.n_rows: dict[str, int] = {}
        self.file_rows: dict[str, int | None] = {}
        self._ids: dict[str, pa.Array] = {}
        self._data_checks: dict[str, list[Check]] = {}
        self._file_checks: dict[str, list[Check]] = {}
        self._waiting: dict[str, tuple[pa.Table, dict]] = {}
        self._suite_parts: dict[str, tuple[dict, dict, dict]] = {}

    def add(self, table: str, held: pa.Table | None = None) -> None:
        """Check one table: its rows (``held`` if given, else read from Parquet), then its file."""
        self.add_rows(table, held)
        self.add_file(table)

    def add_rows(self, table: str, rows: pa.Table | None = None) -> None:
        """Run the table's data suite on ``rows`` (or its Parquet file); may run before the file is written."""
        t = time.perf_counter()
        suite, data_suite, _ = self._suites(table)
        columns = suite_columns(suite)
        if rows is None:
            frame = _read_raw(self.data_dir, table, self.quarter, columns, _code_columns(suite))
        else:
            frame = rows.select([c for c in columns if c in rows.column_names])
        self.n_rows[table] = frame.num_rows
        if "primaryid_int" in frame.column_names:  # kept for the cross-table checks
            self._ids[table] = frame.column("primaryid_int").combine_chunks()
        self.timings[f"read_{table.lower()}"] = round(time.perf_counter() - t, 3)
        self._waiting[table] = (frame, data_suite)
        for ready in [tb for tb in self._waiting if tb not in self._NEEDS_DEMO or "DEMO" in self.n_rows]:
            self._run_data_suite(ready, *self._waiting.pop(ready))

    def add_file(self, table: str) -> None:
        """The file's structural checks (its column set, from the Parquet footer) and row count."""
        t = time.perf_counter()
        _, _, col_suite = self._suites(table)
        schema, self.file_rows[table] = _file_facts(self.data_dir, table, self.quarter)
        checks = []
        if col_suite["expectations"]:  # the column set, on an empty frame of the file's schema
            res = self.gxr.run(col_suite, schema.empty_table().to_pandas(), asset=f"raw_{table.lower()}_columns",
                               params={}, run_name=self.scope, persist=False)
            checks = _checks_from_result(res, layer="raw", table=table, scope=self.scope, suite=col_suite)
        self._file_checks[table] = checks
        self.timings[f"file_{table.lower()}"] = round(time.perf_counter() - t, 3)

    def _suites(self, table: str) -> tuple[dict, dict, dict]:
        """(whole suite, data part, structural part) of the table's era, read once per validation."""
        if table not in self._suite_parts:
            suite = load_suite(raw_suite_name(table, self.era))
            self._suite_parts[table] = (suite, *_split_structural(suite))
        return self._suite_parts[table]

    def _run_data_suite(self, table: str, frame: pa.Table, data_suite: dict) -> None:
        t = time.perf_counter()
        params = _row_params(table, self.era, self.row_bounds, self.n_rows.get("DEMO", 0), self.rows_per_report)
        df = _to_pandas(frame, suite_columns(data_suite))
        res = self.gxr.run(data_suite, df, asset=f"raw_{table.lower()}", params=params, run_name=self.scope)
        self._data_checks[table] = _checks_from_result(res, layer="raw", table=table, scope=self.scope,
                                                       suite=data_suite)
        self.timings[f"gx_{table.lower()}"] = round(time.perf_counter() - t, 3)

    def finish(self) -> dict:
        """Cross-table checks and the ingest record; write the summary; raise on a critical failure."""
        missing = [tb for tb in TABLES + (DELETED,) if tb not in self.n_rows or tb not in self.file_rows]
        if missing:
            raise PipelineError(f"{self.scope}: raw validation finished before {', '.join(missing)} was added")
        for table in list(self._waiting):
            self._run_data_suite(table, *self._waiting.pop(table))
        t = time.perf_counter()
        demo_ids = self._ids.get("DEMO", pa.array([], pa.int64()))
        checks = _coverage_checks(self.scope, demo_ids, {tb: self._ids[tb] for tb in TABLES[1:] if tb in self._ids},
                                  orphan_critical=self.thresholds["orphan_critical"],
                                  orphan_min_count=self.thresholds["orphan_min_count"],
                                  coverage_warn=self.thresholds["coverage_warn"],
                                  coverage_critical=self.thresholds["coverage_critical"])
        self.timings["cross_table"] = round(time.perf_counter() - t, 3)
        for table in TABLES + (DELETED,):
            checks += self._data_checks[table] + self._file_checks[table]
        t = time.perf_counter()
        checks += self._ingest_record_checks()
        self.timings["ingest_record"] = round(time.perf_counter() - t, 3)
        self.timings["validation"] = round(time.perf_counter() - self._t0, 3)
        extra = {"quarter": self.scope, "era": self.era, "rows": self.n_rows, "thresholds": self.thresholds}
        summary = _finish("raw", self.scope, checks, self.data_dir.validation / "raw" / f"{self.scope}.json",
                          extra=extra, gxr=self.gxr, timings=self.timings, raise_on_critical=self.raise_on_critical)
        self.timings["total"] = round(time.perf_counter() - self._t0, 3)
        return summary

    def _ingest_record_checks(self) -> list[Check]:
        """Reconciliation, quarantine rate, columns FDA should have shipped."""
        rec_path = self.data_dir.ingest_record(self.quarter)
        try:
            record = json.loads(rec_path.read_text())
        except FileNotFoundError:
            return [_named("raw", "_ingest", self.scope, "ingest_record_present", CRITICAL, False,
                           details=f"no ingest record {rec_path}")]
        except json.JSONDecodeError as exc:
            return [_named("raw", "_ingest", self.scope, "ingest_record_present", CRITICAL, False,
                           details=f"ingest record {rec_path} is not valid JSON: {exc}")]
        suite = load_suite("raw_ingest_record")
        df = _ingest_frame(record, self.era, {tb: n or 0 for tb, n in self.file_rows.items()},
                           self.thresholds["quarantine_min_lines"])
        res = self.gxr.run(suite, df, asset="raw_ingest_record",
                           params={"quarantine_warn": self.thresholds["quarantine_warn"],
                                   "quarantine_critical": self.thresholds["quarantine_critical"]},
                           run_name=self.scope, index_columns=["table"])
        return _checks_from_result(res, layer="raw", table="_ingest", scope=self.scope, suite=suite)


# --------------------------------------------------------------------------------------------
# Curated tables
# --------------------------------------------------------------------------------------------
CURATED_TABLES = ("reports", "report_ingredients", "report_pts", "funnel", "unmapped_drugs", "name_conflicts")
#: the analyses' tables (OUTC, family drug rows, INDI, THER of the kept version); a curated folder written before
#: them is validated without them (the report then omits the sections that need them)
CURATED_EXTRA_TABLES = ("report_outcomes", "report_substance_drugs", "report_indications", "report_therapies")


def _cfg_threshold(config, name: str, default: float) -> float:
    """A ``[thresholds]`` value from a Config (or a plain mapping), else ``default``."""
    if config is None:
        return default
    if isinstance(config, dict):
        return float((config.get("thresholds") or config).get(name, default))
    t = getattr(config, "thresholds", None)
    return float(getattr(t, name, default)) if t is not None else default


def _read_curated(data_dir: DataDir, name: str, columns: list[str]) -> tuple[pa.Table, pa.Schema | None]:
    path = data_dir.curated / f"{name}.parquet"
    if not path.exists():
        return pa.table({c: pa.array([], pa.null()) for c in columns}), None
    schema = pq.read_schema(path)
    return pq.read_table(path, columns=[c for c in columns if c in schema.names]), schema


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


def validate_curated(data_dir: DataDir, config=None, *, unmapped_share_max: float | None = None,
                     data_docs: bool | None = None, docs_dir: str | os.PathLike | None = None,
                     raise_on_critical: bool = True) -> dict:
    """Validate ``DIR/curated/*.parquet``; write ``validation/curated/curated.json``; raise on critical failures.

    Critical: one row per report_id; no caseid of any deleted-case list left; every in-analysis report has at
    least one drug and one PT; ingredient/PT rows belong to a report; the funnel chains (reports_out of step i =
    reports_in of step i+1), never adds reports, starts with every raw DEMO row and ends at the in-analysis count.
    Warning: the share of unmapped drug rows above ``unmapped_share_max`` (default: config
    ``thresholds.unmapped_share_max``, else 0.05).
    """
    import pandas as pd

    data_dir = data_dir if isinstance(data_dir, DataDir) else DataDir.of(data_dir)
    if unmapped_share_max is None:
        unmapped_share_max = _cfg_threshold(config, "unmapped_share_max", 0.05)
    scope, timings, checks = "", {}, []
    t0 = time.perf_counter()
    gxr = _Gx(_docs_dir(data_dir, docs_dir), render=_data_docs_enabled(data_docs, default=False))
    run_name = "curated"

    suites = {n: load_suite(f"curated_{n}") for n in CURATED_TABLES}
    tables, schemas = {}, {}
    for name in CURATED_TABLES:
        cols = suite_columns(suites[name])
        if name == "reports":
            cols = list(dict.fromkeys([*cols, "in_analysis", "has_drug", "has_pt"]))
        tables[name], schemas[name] = _read_curated(data_dir, name, cols)
        if schemas[name] is None:
            checks.append(_named("curated", name, scope, "file_present", CRITICAL, False,
                                 details=f"missing {data_dir.curated / (name + '.parquet')}"))
    rows = {n: t.num_rows for n, t in tables.items()}

    def gx_table(name: str, df, suite: dict | None = None, params: dict | None = None, index=None):
        suite = suite or suites[name]
        data_suite, col_suite = _split_structural(suite)
        res = gxr.run(data_suite, df, asset=f"curated_{name}", params=params or {}, run_name=run_name,
                      index_columns=index)
        out = _checks_from_result(res, layer="curated", table=name, scope=scope, suite=data_suite)
        if col_suite["expectations"] and schemas.get(name) is not None:
            res = gxr.run(col_suite, schemas[name].empty_table().to_pandas(), asset=f"curated_{name}_columns",
                          params={}, run_name=run_name, persist=False)
            out += _checks_from_result(res, layer="curated", table=name, scope=scope, suite=col_suite)
        return out

    # Row-level suites.
    for name in ("reports", "report_ingredients", "report_pts", "unmapped_drugs", "name_conflicts"):
        if schemas[name] is not None:
            checks += gx_table(name, _to_pandas(tables[name], suite_columns(suites[name])))

    # The analyses' tables: invariants of each, and every row belongs to a kept report.
    extra_ids = {}
    for name in CURATED_EXTRA_TABLES:
        if not (data_dir.curated / f"{name}.parquet").exists():
            continue
        suite = load_suite(f"curated_{name}")
        tables[name], schemas[name] = _read_curated(data_dir, name, suite_columns(suite))
        rows[name] = tables[name].num_rows
        checks += gx_table(name, _to_pandas(tables[name], suite_columns(suite)), suite)
        extra_ids[name] = tables[name].column("report_id").combine_chunks()

    # Cross-table facts (pyarrow), fed to GX where they become row-level expectations.
    reports = tables["reports"]
    if schemas["reports"] is not None and schemas["report_ingredients"] is not None \
            and schemas["report_pts"] is not None:
        rid = reports.column("report_id").combine_chunks()
        n_drug = tables["report_ingredients"].group_by("report_id").aggregate([("report_id", "count")])
        n_pt = tables["report_pts"].group_by("report_id").aggregate([("report_id", "count")])
        pop = reports.filter(pc.fill_null(reports.column("in_analysis"), False)).select(
            ["report_id", "has_drug", "has_pt"])
        pop = pop.join(n_drug.rename_columns(["report_id", "n_drug_rows"]), "report_id", join_type="left outer")
        pop = pop.join(n_pt.rename_columns(["report_id", "n_pt_rows"]), "report_id", join_type="left outer")
        df = pop.to_pandas()
        df["n_drug_rows"] = df["n_drug_rows"].fillna(0).astype("int64")
        df["n_pt_rows"] = df["n_pt_rows"].fillna(0).astype("int64")
        checks += gx_table("analysis_population", df, load_suite("curated_analysis_population"),
                           index=["report_id"])
        rid_set = pc.unique(rid.drop_null())
        for child in ("report_ingredients", "report_pts", "name_conflicts", *extra_ids):
            if schemas.get(child) is None:
                continue
            ids = pc.unique(tables[child].column("report_id").combine_chunks())
            orphans = pc.filter(ids, pc.invert(pc.fill_null(pc.is_in(ids, value_set=rid_set), False)))
            c = _named("curated", child, scope, "report_id_in_reports", CRITICAL, len(orphans) == 0,
                       columns=["report_id"], unexpected=len(orphans), total=len(ids),
                       examples=orphans.slice(0, 5).to_pylist(),
                       notes="every row belongs to a kept report (pyarrow set operation)")
            if not c.success:
                c.details = (f"{len(orphans):,} report_id(s) not in reports, e.g. "
                             f"{', '.join(map(str, orphans.slice(0, 5).to_pylist()))}")
            checks.append(c)
        raw = _raw_totals(data_dir)
        left = pc.filter(rid_set, pc.is_in(rid_set, value_set=raw["deleted_caseids"])) \
            if len(raw["deleted_caseids"]) else pa.array([], pa.int64())
        c = _named("curated", "reports", scope, "no_deleted_caseid", CRITICAL, len(left) == 0,
                   columns=["report_id"], unexpected=len(left), total=len(rid_set),
                   examples=left.slice(0, 5).to_pylist(),
                   notes=f"report_id (= caseid) against the union of raw/deleted of every quarter "
                         f"({len(raw['deleted_caseids']):,} caseids; pyarrow)")
        if not c.success:
            c.details = (f"{len(left):,} deleted caseid(s) still in reports, e.g. "
                         f"{', '.join(map(str, left.slice(0, 5).to_pylist()))}")
        checks.append(c)
    else:
        raw = _raw_totals(data_dir)

    # Funnel: GX on the steps with the previous step's output beside each row.
    if schemas["funnel"] is not None:
        f = tables["funnel"].to_pandas().sort_values("step").reset_index(drop=True)
        f["prev_reports_out"] = f["reports_out"].shift(1)
        if len(f):
            f.loc[0, "prev_reports_out"] = f.loc[0, "reports_in"]  # the first step has no predecessor
        f["prev_reports_out"] = f["prev_reports_out"].astype("int64")
        checks += gx_table("funnel", f, index=["step"])
        first = int(f["reports_in"].iloc[0]) if len(f) else None
        c = _named("curated", "funnel", scope, "funnel_starts_with_raw_demo_rows", CRITICAL,
                   first == raw["demo_rows"], columns=["reports_in"], observed=first,
                   notes="step 1 reports_in = DEMO rows of every ingested quarter (Parquet footers)")
        if not c.success:
            c.details = f"step 1 reports_in is {_fmt_count(first)}, raw DEMO has {raw['demo_rows']:,} rows"
        checks.append(c)
        if schemas["reports"] is not None:
            n_analysis = int(pc.sum(pc.fill_null(reports.column("in_analysis"), False)).as_py() or 0)
            step = f[f["name"] == "analysis population"]
            got = int(step["reports_out"].iloc[0]) if len(step) else None
            c = _named("curated", "funnel", scope, "funnel_ends_at_analysis_population", CRITICAL,
                       got == n_analysis, columns=["reports_out"], observed=got,
                       notes="the 'analysis population' step = reports with in_analysis")
            if not c.success:
                c.details = (f"'analysis population' reports_out is {_fmt_count(got)}, reports has "
                             f"{n_analysis:,} in_analysis rows")
            checks.append(c)

    # Unmapped drug rows (warning): curate's own count from its manifest, else the top-N list / raw DRUG rows.
    share, basis = None, None
    try:
        man = json.loads((data_dir.curated / "manifest.json").read_text())
        drugs = (man.get("summary") or {}).get("drugs") or {}
        if "unmapped_share" in drugs:
            share, basis = float(drugs["unmapped_share"]), "curated/manifest.json summary.drugs.unmapped_share"
    except (OSError, ValueError):
        pass
    if share is None and schemas["unmapped_drugs"] is not None:
        n_un = int(pc.sum(tables["unmapped_drugs"].column("n_rows")).as_py() or 0)
        share = n_un / raw["drug_rows"] if raw["drug_rows"] else 0.0
        basis = "sum(unmapped_drugs.n_rows) / raw DRUG rows (a lower bound: top names only)"
    if share is not None:
        df = pd.DataFrame({"unmapped_share": [share], "basis": [basis]})
        checks += gx_table("drug_mapping", df, load_suite("curated_drug_mapping"),
                           params={"unmapped_share_max": unmapped_share_max})
    timings["validation"] = round(time.perf_counter() - t0, 3)
    extra = {"rows": rows, "thresholds": {"unmapped_share_max": unmapped_share_max},
             "unmapped_share": share, "unmapped_share_basis": basis}
    return _finish("curated", "curated", checks, data_dir.validation / "curated" / "curated.json", extra=extra,
                   gxr=gxr, timings=timings, raise_on_critical=raise_on_critical)


# --------------------------------------------------------------------------------------------
# Outputs (statistics tables of a report)
# --------------------------------------------------------------------------------------------
_CI_GAPS = {  # derived column: (upper, lower) -> upper - lower >= -tolerance where both are finite
    "prr_minus_prr_lo": ("prr", "prr_lo"), "prr_hi_minus_prr": ("prr_hi", "prr"),
    "ror_minus_ror_lo": ("ror", "ror_lo"), "ror_hi_minus_ror": ("ror_hi", "ror"),
    "ic_minus_ic025": ("ic", "ic025"), "ic975_minus_ic": ("ic975", "ic"),
    "ebgm_minus_eb05": ("ebgm", "eb05"), "eb95_minus_ebgm": ("eb95", "ebgm"),  # warnings: EBGM is no quantile
    "eb95_minus_eb05": ("eb95", "eb05"), "eb95_crude_minus_eb05_crude": ("eb95_crude", "eb05_crude"),
}


def signal_rules(config=None, thresholds: dict | None = None) -> dict:
    """The flag thresholds to recompute: engine defaults <- config ``[thresholds]`` <- ``thresholds``."""
    rules = {"prr_min_a": 3, "prr_min": 2.0, "chi2_yates_min": 4.0, "ror_min_a": 3, "ror_lo_min": 1.0,
             "ic025_min": 0.0, "eb05_min": 2.0, "ebgm_min_a": 0}
    if config is None and thresholds is None:
        try:
            from pipeline.settings import load_config

            config = load_config(None)
        except Exception:  # noqa: BLE001 - the shipped config is optional here
            config = None
    if config is not None:
        t = config.get("thresholds", config) if isinstance(config, dict) else getattr(config, "thresholds", None)
        get = (lambda k: t.get(k)) if isinstance(t, dict) else (lambda k: getattr(t, k, None))
        for ours, theirs in (("prr_min_a", "evans_min_a"), ("prr_min", "evans_min_prr"),
                             ("chi2_yates_min", "evans_min_chi2_yates"), ("ror_min_a", "ror_min_a"),
                             ("ror_lo_min", "ror_lo_gt"), ("ic025_min", "ic025_gt"), ("eb05_min", "eb05_ge"),
                             ("ebgm_min_a", "ebgm_min_a")):
            if t is not None and get(theirs) is not None:
                rules[ours] = get(theirs)
    rules.update(thresholds or {})
    return rules


def _outputs_frame(df, keys: list[str], rules: dict):
    """The statistics columns the suite reads plus the derived check columns (NaN/inf where undefined)."""
    import pandas as pd

    cols = [c for c in df.columns if c in set(keys) | {
        "a", "b", "c", "d", "n_total", "expected", "prr", "prr_lo", "prr_hi", "chi2", "chi2_yates", "ror", "ror_lo",
        "ror_hi", "ic", "ic025", "ic975", "ebgm", "eb05", "eb95", "fisher_p", "fisher_midp",
        "signal_prr", "signal_ror", "signal_ic", "signal_ebgm"}]
    out = df[cols].copy()
    def num(c: str) -> np.ndarray:
        if c not in df:
            return np.full(len(df), np.nan)
        return pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float)

    a, b, c, d = num("a"), num("b"), num("c"), num("d")
    out["a_max"] = np.minimum(a + b, a + c)
    out["abcd_sum"] = a + b + c + d
    with np.errstate(invalid="ignore"):
        for name, (hi, lo) in _CI_GAPS.items():
            x, y = num(hi), num(lo)
            out[name] = np.where(np.isfinite(x) & np.isfinite(y), x - y, np.nan)
        ok = lambda v: np.nan_to_num(v, nan=-np.inf)  # NaN never raises a flag  # noqa: E731
        out["signal_prr_expected"] = ((a >= rules["prr_min_a"]) & (ok(num("prr")) >= rules["prr_min"])
                                      & (ok(num("chi2_yates")) >= rules["chi2_yates_min"]))
        out["signal_ror_expected"] = (a >= rules["ror_min_a"]) & (ok(num("ror_lo")) > rules["ror_lo_min"])
        out["signal_ic_expected"] = ok(num("ic025")) > rules["ic025_min"]
        out["signal_ebgm_expected"] = (ok(num("eb05")) >= rules["eb05_min"]) & (a >= rules["ebgm_min_a"])
    for s in ("prr", "ror", "ic", "ebgm"):
        if f"signal_{s}" in out:
            out[f"signal_{s}"] = out[f"signal_{s}"].astype(bool)
    return out


def _data_root_of_report(report_dir: Path) -> Path | None:
    """``DIR`` for ``DIR/reports/<run>`` or the staging ``DIR/.reports-staging/<run>``."""
    if report_dir.parent.name in ("reports", ".reports-staging"):
        return report_dir.parent.parent
    return None


def validate_outputs(report_dir: str | os.PathLike, signals, all_pairs, mgps: dict | None, config=None, *,
                     thresholds: dict | None = None, ci_tolerance: float = 1e-9, data_docs: bool | None = None,
                     docs_dir: str | os.PathLike | None = None, raise_on_critical: bool = True) -> dict:
    """Validate the statistics of a report; write ``<report_dir>/validation.json`` (and
    ``DIR/validation/outputs/<run_id>.json``); raise on critical failures.

    Critical (structural invariants and identities only): a, b, c, d >= 0; a <= min(n_drug, n_event);
    a+b+c+d = n_total; lower <= point <= upper for PRR, ROR and IC and EB05 <= EB95, on rows where both are finite
    (NaN/inf are legitimate); probabilities in [0, 1]; the four signal flags equal their recomputation from the
    thresholds (``config`` [thresholds], or the shipped default config, overridden by ``thresholds``); MGPS
    hyperparameters finite and positive when ``mgps`` has a ``theta``. Warnings: EBGM outside [EB05, EB95] (a
    geometric mean of a mixture posterior can lie there), MGPS optimiser without convergence message, no
    agreeing start, no prior fitted.
    """
    import pandas as pd

    report_dir = Path(report_dir)
    run_id = report_dir.name
    root = _data_root_of_report(report_dir)
    rules = signal_rules(config, thresholds)
    t0 = time.perf_counter()
    if docs_dir is None and root is not None:
        docs_dir = DataDir(root).validation / "data_docs"
    gxr = _Gx(Path(docs_dir) if docs_dir is not None else None, render=_data_docs_enabled(data_docs, default=False))
    checks: list[Check] = []
    params = {"ci_tolerance": -abs(ci_tolerance)}
    for name, df in (("signals", signals), ("all_pairs", all_pairs)):
        if df is None:
            continue
        if isinstance(df, pa.Table):
            df = df.to_pandas()
        suite = _outputs_suite_for(load_suite(f"outputs_{name}"), df)
        keys = [k for k in ("substance", "drug", "pt", "event", "pt_group") if k in df.columns]
        frame = _outputs_frame(df, keys, rules)
        data_suite, col_suite = _split_structural(suite)
        res = gxr.run(data_suite, frame, asset=f"outputs_{name}", params=params, run_name=run_id,
                      index_columns=keys or None)
        checks += _checks_from_result(res, layer="outputs", table=name, scope=run_id, suite=data_suite)
        res = gxr.run(col_suite, df.head(0), asset=f"outputs_{name}_columns", params={}, run_name=run_id,
                      persist=False)
        checks += _checks_from_result(res, layer="outputs", table=name, scope=run_id, suite=col_suite)
    theta = (mgps or {}).get("theta") if isinstance(mgps, dict) else None
    if theta:
        row = {k: theta.get(k, np.nan) for k in ("alpha1", "beta1", "alpha2", "beta2", "p")}
        row["neg_loglik"] = mgps.get("neg_loglik", np.nan)
        row["converged"] = bool(mgps.get("converged", False))
        row["published"] = bool(mgps.get("published", all(v is not None for v in theta.values())))
        row["agreement"] = mgps.get("agreement") is not False  # None: not assessed (no second start to compare)
        df = pd.DataFrame([row]).astype({k: float for k in ("alpha1", "beta1", "alpha2", "beta2", "p", "neg_loglik")})
        suite = load_suite("outputs_mgps")
        res = gxr.run(suite, df, asset="outputs_mgps", params={}, run_name=run_id)
        checks += _checks_from_result(res, layer="outputs", table="mgps", scope=run_id, suite=suite)
    timings = {"validation": round(time.perf_counter() - t0, 3)}
    extra = {"run_id": run_id, "rows": {"signals": None if signals is None else len(signals),
                                        "all_pairs": None if all_pairs is None else len(all_pairs)},
             "thresholds": {**rules, "ci_tolerance": ci_tolerance}}
    also = [DataDir(root).validation / "outputs" / f"{run_id}.json"] if root is not None else []
    return _finish("outputs", run_id, checks, report_dir / "validation.json", extra=extra, gxr=gxr,
                   timings=timings, raise_on_critical=raise_on_critical, also_write=also)


def _outputs_suite_for(suite: dict, df) -> dict:
    """Key columns are ``substance``/``pt`` in report tables and ``drug``/``event`` from the engine: use
    whichever pair the frame has (the suite names one of them)."""
    rename = {}
    if "substance" in df.columns and "drug" not in df.columns:
        rename.update({"drug": "substance", "event": "pt"})
    elif "drug" in df.columns and "substance" not in df.columns:
        rename.update({"substance": "drug", "pt": "event"})
    if not rename:
        return suite
    text = json.dumps(suite)
    for old, new in rename.items():
        text = text.replace(f'"{old}"', f'"{new}"')
    return json.loads(text)
