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

The steps, in the order the data flows: :mod:`.params` (parameters, the curated database, the fingerprint),
:mod:`.population` (the analysis population and its counts in DuckDB), :mod:`.scoring` (the MGPS prior and the
statistics), :mod:`.trend`, :mod:`pipeline.analyses`, :mod:`.manifest`, :mod:`.publish` (staging, one rename,
``latest`` last; a failure anywhere leaves the previous report and ``latest`` untouched).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import os
import time

from pipeline import duck
from pipeline.layout import DataDir
from pipeline.reports import population, publish, trend
from pipeline.reports.manifest import compose, detect_synthetic, read_curation_notes, read_manifest, validate
from pipeline.reports.params import REPORT_VERSION, curated_inputs, resolve_params
from pipeline.reports.publish import ReportTables, latest_report_dir
from pipeline.reports.scoring import (GROUP_PREFIX, all_pairs_table, fit_prior, focus_rows,
                                      score, signals_table)
from pipeline.vocabulary import FAMILY, SUBSTANCES

log = logging.getLogger("pipeline.reports")

# what callers import from here (the CLI, the Airflow page, the study command, tests)
__all__ = ["FAMILY", "GROUP_PREFIX", "REPORT_VERSION", "SUBSTANCES", "build_report", "detect_synthetic",
           "latest_report_dir", "read_manifest", "resolve_params", "score"]


class _Steps:
    """The steps of a build: ``next(label)`` closes the step before (its time goes to the log, which Airflow task
    logs show) and names the next one on the progress bar."""

    def __init__(self, total: int, enabled: bool):
        self._bar, self._label = None, None
        self._t0 = self._t = time.perf_counter()
        if enabled:
            with contextlib.suppress(ImportError):  # tqdm is a pinned dependency
                from tqdm import tqdm

                self._bar = tqdm(total=total, desc="signals", unit="step", leave=False)

    def next(self, label: str | None = None, note: str = "") -> None:
        now = time.perf_counter()
        if self._label is not None:
            log.info("signals: %s done in %.1fs (%.1fs so far)%s", self._label, now - self._t, now - self._t0,
                     f": {note}" if note else "")
            if self._bar is not None:
                self._bar.update()
        self._label, self._t = label, now
        if label and self._bar is not None:
            self._bar.set_postfix_str(label)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _out_of_memory_is_one_line(build):
    """Out of memory anywhere in a build (the analyses' and the counting's connections included) becomes the
    one-line ResourceError of :func:`pipeline.duck.translate`, for every caller (CLI, DAG task, study)."""
    @functools.wraps(build)
    def wrapper(data_dir, config, **params):
        with duck.translate(getattr(config, "resources", None), "signals", data_dir):
            return build(data_dir, config, **params)
    return wrapper


@_out_of_memory_is_one_line
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
    from pipeline import analyses

    data_dir = data_dir if isinstance(data_dir, DataDir) else DataDir.of(data_dir)
    params = resolve_params(config, substances=substances, pt_groups=pt_groups, roles=roles,
                            mgps_likelihood=mgps_likelihood, cutoff_quarter=cutoff_quarter, from_quarter=from_quarter)
    params["trend_top_pts"] = int(trend_top_pts)
    inputs = curated_inputs(data_dir, config, params, progress=progress)
    cur = inputs.folder
    kept = None if force else publish.unchanged_latest(data_dir, inputs.fingerprint)
    if kept is not None:
        return kept

    run = publish.new_run(data_dir, inputs.fingerprint, now)
    steps = _Steps(7, progress)
    con = population.connect(config, data_dir)
    try:
        steps.next("load")
        pop = population.register_population(con, cur, config, params)
        steps.next("background", f"{pop.n_total:,} reports in the analysis population")
        bg = population.background(pop, params)
        steps.next(f"MGPS fit ({params['mgps_likelihood']})",
                   f"{bg.counts.num_rows:,} ingredient x PT pairs with a >= 1")
        prior = fit_prior(bg, population.mgps_strata(pop, cur, config, params), params["mgps_likelihood"])
        steps.next("statistics")
        all_pairs = all_pairs_table(prior, config)
        signals = signals_table(population.focus_counts(pop, params, prior.strata), population.indication_counts(pop),
                                prior, config, params)
        population.release_margins(prior.strata)
        extra = analyses.run_all(con, cur, config, params, GROUP_PREFIX, main=pop)
        steps.next("trend", f"{len(signals):,} focus rows, {len(all_pairs):,} background rows; analyses "
                   + ", ".join(f"{k} {v:.1f}s" for k, v in extra.timings_s.items()))
        # the trend's E is crude (strata by quarter are not tracked): it uses the crude-E prior
        trend_rows = trend.cumulative_trend(pop, signals, params, config, prior.fit_crude, group_prefix=GROUP_PREFIX,
                                            curated=cur)
        steps.next("write", f"{len(trend_rows):,} trend rows")
        tables = ReportTables(signals=signals, all_pairs=all_pairs, trend=trend_rows,
                              funnel=population.funnel(pop, cur, params, signals), analyses=extra)
        publish.write_tables(run, tables, params=params, config=config, data_cutoff=pop.quarters[-1],
                             trend_basis=trend.basis(cur))
        steps.next("validate")
        validation = validate(run.staging, signals, all_pairs, prior.fit.as_dict(), config)
        notes = read_curation_notes(cur)
        manifest = compose(run_id=run.run_id, created_at=run.created_at, data_dir=data_dir, inputs=inputs,
                           params=params, config=config, pop=pop, prior=prior, tables=tables, validation=validation,
                           notes=notes)
        steps.next("html")
        publish.write_page_and_manifest(run, manifest, _render_page(manifest, tables, notes, config))
        steps.next()
        how = publish.publish(run)
    finally:
        steps.close()
        duck.close(con)
        publish.discard_staging(run)
    log.info("signals: report %s (%s reports, data through %s; latest via %s)", run.final, f"{pop.n_total:,}",
             pop.quarters[-1], how)
    return {"report_dir": str(run.final), "run_id": run.run_id, "changed": True, "focus": focus_rows(signals)}


def _render_page(manifest: dict, tables: ReportTables, notes, config) -> str:
    from pipeline.reports.html import render_report

    return render_report(manifest=manifest, signals=tables.signals, trend=tables.trend, funnel=tables.funnel,
                         unmapped=notes.unmapped, config=config, name_conflicts=notes.name_conflicts,
                         dup_review=notes.dup_review, analyses=tables.analyses)
