"""Beyond the disproportionality table: what published FAERS studies report next to it.

One module per table of the report folder (names as ``docs/INTERFACE.md``): :mod:`.outcomes`
(``outcomes.parquet``), :mod:`.cases` (``cases.parquet``), :mod:`.sensitivity` (``sensitivity.parquet``),
:mod:`.subgroups` (``subgroups.parquet``), :mod:`.comparators` (``comparators.parquet``), :mod:`.onset`
(``onset.parquet``) and :mod:`.by_use` (``by_use.parquet``). All count de-duplicated reports of the same
analysis population as ``signals.parquet`` with SQL over the curated tables (:mod:`.cells` holds the one 2×2
count they share) and compute statistics with the pipeline's vectorised functions on named cells a, b, c, d.
:mod:`.section` renders their report section through a Jinja2 template.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pandas as pd

from pipeline.analyses.base import Base, prepare
from pipeline.analyses.cells import shared_population_counts

FILES = ("outcomes", "cases", "sensitivity", "subgroups", "comparators", "onset", "by_use")


@dataclass
class Results:
    tables: dict[str, pd.DataFrame]
    onsets: dict = field(default_factory=dict)      # (substance, group) -> kept onset days (plot)
    timings_s: dict = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # curated tables the folder predates


def run_all(con, cur, config, params: dict, group_prefix: str, *, main) -> Results:
    """Every analysis table for one report.

    ``main`` is the report's population (:class:`pipeline.reports.population.Population`, relations of ``con``):
    ``outcomes`` reads its focus exposures and events so its ``a`` is the ``a`` of ``signals.parquet``."""
    from pipeline.analyses import by_use, cases, comparators, onset, outcomes, sensitivity, subgroups
    from pipeline.curate.extras import TABLE_NAMES

    timings, t0 = {}, time.perf_counter()
    base: Base = prepare(con, cur, config, params, group_prefix)
    timings["prepare"] = round(time.perf_counter() - t0, 3)
    tables, onsets = {}, {}
    steps = (("outcomes", lambda: outcomes.outcomes(con, base, exposed=main.focus_exposures, events=main.events,
                                                    group_events=main.group_events)),
             ("cases", lambda: cases.cases(con, base, config)),
             ("sensitivity", lambda: sensitivity.sensitivity(con, base, config)),
             ("subgroups", lambda: subgroups.subgroups(con, base, config)),
             ("comparators", lambda: comparators.comparators(con, base, config)),
             ("onset", lambda: onset.onset(con, base, config)),
             ("by_use", lambda: by_use.by_use(con, base, config)))
    with shared_population_counts(con):  # the analyses' tables stay as prepared until the end
        for name, fn in steps:
            t = time.perf_counter()
            got = fn()
            if name == "onset":
                got, onsets = got
            tables[name] = got.reset_index(drop=True)
            timings[name] = round(time.perf_counter() - t, 3)
    for t in ("an_rpt", "an_fam", "an_fev", "an_x"):
        con.execute(f"DROP TABLE IF EXISTS {t}")
    return Results(tables=tables, onsets=onsets, timings_s=timings,
                   missing=[t for t in TABLE_NAMES if not base.has(t)])


__all__ = ["FILES", "Results", "run_all"]


_INT = {"a", "b", "c", "d", "n_total", "n_reports", "n_with_onset", "n_negative_excluded", "serious",
        "death", "life_threatening", "hospitalization", "disability", "congenital_anomaly", "required_intervention",
        "other_serious", "cmp_a", "cmp_c"}
_TEXT = {"scenario", "substance", "pt_group", "pt", "characteristic", "category", "subgroup_by", "subgroup",
         "comparison", "population", "comparator", "stratum_by", "stratum", "shape_reading", "ror_ci_overlap",
         "ic_ci_overlap"}


def schema_of(columns) -> "pa.Schema":
    """Arrow schema of an analysis table: names as text, counts int64, statistics float64."""
    import pyarrow as pa

    return pa.schema([(c, pa.string() if c in _TEXT else pa.int64() if c in _INT else pa.float64())
                      for c in columns])


def to_arrow(df: pd.DataFrame) -> "pa.Table":
    import numpy as np
    import pyarrow as pa

    schema = schema_of(df.columns)
    arrays = []
    for f in schema:
        col = df[f.name]
        if pa.types.is_string(f.type):
            arrays.append(pa.array(col.astype(object).where(col.notna(), None).tolist(), type=pa.string()))
        elif pa.types.is_integer(f.type):
            arrays.append(pa.array(col.to_numpy(np.int64), type=pa.int64()))
        else:
            arrays.append(pa.array(col.to_numpy(np.float64), type=pa.float64()))
    return pa.Table.from_arrays(arrays, schema=schema)
