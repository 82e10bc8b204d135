"""The GX runner: one ephemeral context per process, suites run on dataframes, results turned into checks.

GX is imported lazily (2-3 s) inside these functions, never at module import.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any, Iterable

import pyarrow as pa

from pipeline.jsonsafe import jsonable
from pipeline.layout import DataDir
from pipeline.quality.checks import CRITICAL, Check, fmt_count

#: Data Docs index lists at most this many (newest) validation results; older pages stay on disk. Building the
#: index costs ~5-10 ms per listed result, so an uncapped index over 90 quarters would cost seconds per run.
DATA_DOCS_INDEX_LIMIT = int(os.environ.get("FAERS_DATA_DOCS_INDEX_LIMIT", "200"))


def data_docs_enabled(flag: bool | None, default: bool) -> bool:
    """``data_docs`` argument, else the FAERS_DATA_DOCS environment variable (1/0), else ``default``."""
    if flag is not None:
        return bool(flag)
    env = os.environ.get("FAERS_DATA_DOCS", "").strip().lower()
    if env:
        return env not in ("0", "false", "no", "off")
    return default


class GxCore:
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

    def suite(self, suite: dict, fresh: bool = False) -> str:
        """Add ``suite`` to the context unless it is there with the same expectations (``fresh=True``: add it
        again); returns its content key."""
        key = json.dumps(suite, sort_keys=True, default=str)
        name = suite["name"]
        have = self._suites.get(name)
        if have is None or have[0] != key or fresh:  # new, or the same name with other expectations: replace it
            if have is not None:
                self.ctx.suites.delete(name)
            self._suites[name] = (key, self.ctx.suites.add(self.gx.ExpectationSuite(**suite)))
            self.built["suites"] += 1
        return key

    def definition(self, suite: dict, asset: str, fresh: bool = False):
        """The validation definition of ``suite`` on ``asset`` (a whole-dataframe batch), built once
        (``fresh=True``: build the suite and the definition again)."""
        name = suite["name"]
        if fresh:
            self._definitions.pop((asset, name, json.dumps(suite, sort_keys=True, default=str)), None)
        key = self.suite(suite, fresh)
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


_CORES: dict[str, GxCore] = {}


def shared_cores() -> list[GxCore]:
    """The GX cores this process keeps for reuse (one per results folder)."""
    return list(_CORES.values())


def drop_shared_cores() -> None:
    """Forget the kept GX cores: the next validation builds a fresh context (and frees the old ones' memory)."""
    _CORES.clear()


def _core(docs_dir: Path | None) -> GxCore:
    """The process's GX core for this results folder (``FAERS_GX_REUSE=0``: a fresh one every time)."""
    key = str(docs_dir.resolve()) if docs_dir is not None else ""
    if os.environ.get("FAERS_GX_REUSE", "1").strip().lower() in ("0", "false", "no", "off"):
        return GxCore(docs_dir)
    if key not in _CORES:
        _CORES[key] = GxCore(docs_dir)
    return _CORES[key]


class GxRun:
    """A validation run on the process's ephemeral GX context (:class:`GxCore`).

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
        self.suites: dict[str, dict] = {}  # name -> the suite whose result went to the result store last

    def adopt(self, suites: dict[str, dict]) -> None:
        """Render Data Docs also for ``suites``, which another process's run stored results of (its suites
        must be in this context to be rendered)."""
        self.suites.update(suites)
        if self.render:
            for suite in suites.values():
                self.core.suite(suite)

    def run(self, suite: dict, df, *, asset: str, params: dict, run_name: str, index_columns: list | None = None,
            persist: bool = True):
        """GX's validation result of ``suite`` on the dataframe ``df``; ``params`` fill the suite's
        ``$PARAMETER`` values, ``index_columns`` name offending rows, ``persist`` keeps the result on disk."""
        from great_expectations.core.run_identifier import RunIdentifier
        from great_expectations.execution_engine import pandas_execution_engine as pee

        self._n += 1
        persist = persist and self.file_store is not None
        store = self.file_store if persist else self.memory_store
        if self.ctx.variables.validation_results_store_name != store:  # setting it rewrites GX's config
            self.ctx.variables.validation_results_store_name = store
        if persist:  # keep only the latest result per (suite, scope)
            shutil.rmtree(self.results_dir / suite["name"] / run_name, ignore_errors=True)
            self.suites[suite["name"]] = suite
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
            _forget_batches(self.core.source)

    def build_docs(self) -> str | None:
        """Render every stored result that has no page yet (incl. this call's), this call's suites, the index."""
        if not self.render:
            return None
        return _render_docs(self.ctx, self.docs_dir, self.file_store, self.suites)


def _forget_batches(source) -> None:
    """Let go of the validated frames: GX's execution engine keeps the last batch of every asset it has run, so
    without this one frame per asset (table and suite) stays alive for the life of the process."""
    manager = source.get_execution_engine().batch_manager
    manager.reset_batch_cache()
    manager.batch_data_cache.clear()


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
    gxr = GxRun(docs, render=True)
    return gxr.build_docs()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001
        return False


def checks_from_result(res, *, layer: str, table: str, scope: str, suite: dict) -> list[Check]:
    """One :class:`Check` per expectation of a GX validation result ``res`` of ``suite``: counts, a few
    offending values (with their row identifiers where the run asked for them), a readable detail."""
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
            c.details = (f"observed {fmt_count(result.get('observed_value'))} rows, expected "
                         f"{fmt_count(kw.get('min_value'))}..{fmt_count(kw.get('max_value'))}")
        elif cfg.type == "expect_table_columns_to_match_set" and not c.details:
            mm = (result.get("details") or {}).get("mismatched") or {}
            c.details = (f"missing {mm.get('missing') or []}, unexpected {mm.get('unexpected') or []}"
                         if mm else f"observed {result.get('observed_value')}")
        elif cfg.type == "expect_column_distinct_values_to_contain_set" and not c.details:
            c.details = f"missing {result.get('partial_missing_list') or result.get('details')}"
        out.append(c)
    return out


def docs_dir_for(data_dir: DataDir, docs_dir: str | os.PathLike | None) -> Path:
    """``docs_dir`` if given, else ``validation/data_docs`` of the data directory (the real one for a staged
    quarter)."""
    if docs_dir is not None:
        return Path(docs_dir)
    root = data_dir.root
    if root.parent.name == ".staging":  # ingest validates a staged quarter: publish docs in the real tree
        root = root.parent.parent
    return DataDir(root).validation / "data_docs"


def to_pandas(t: pa.Table, columns: list[str]):
    """``t`` as the pandas frame GX validates, with every column in ``columns`` present."""
    import pandas as pd

    # narrow numbers widened: GX's between-check is vectorised for int64/float64 only and calls Python per value
    # otherwise (receipt_year, an int32, was a tenth of the curated validation)
    wide = {f.name: pa.int64() if pa.types.is_integer(f.type) else pa.float64() for f in t.schema
            if (pa.types.is_integer(f.type) and f.type.bit_width < 64) or pa.types.is_float32(f.type)}
    if wide:
        t = t.cast(pa.schema([pa.field(f.name, wide.get(f.name, f.type), f.nullable) for f in t.schema]))
    # text stays in Arrow (pd.ArrowDtype): no Python string per value (a third of the validation time
    # on a real-scale quarter), and GX's null, set and length checks run as Arrow kernels
    df = t.to_pandas(types_mapper=lambda typ: pd.ArrowDtype(typ) if pa.types.is_string(typ) else None)
    for c in columns:  # a column the file lacks: present but all-null, so the expectation fails, not GX
        if c not in df.columns:
            df[c] = pd.Series([None] * len(df), dtype=object)
    return df
