"""The report's statistics tables: their columns and Arrow schemas, the one MGPS prior, and scoring with it.

Shared by the main tables (:mod:`pipeline.reports.build`) and the trend (:mod:`pipeline.reports.trend`); it imports
neither. Counts come in as ``drug, event`` frames (a PT group's event key is ``GROUP_PREFIX`` + its name) and leave
as ``substance, pt, pt_group`` rows (PT rows: ``pt_group`` null; group rows: ``pt`` null).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.jsonsafe import jsonable

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

SIGNALS_SCHEMA = stats_schema(extra_back=SIGNALS_EXTRA + MGPS_STRAT_EXTRA)
ALL_PAIRS_SCHEMA = stats_schema(extra_back=MGPS_STRAT_EXTRA)
TREND_SCHEMA = stats_schema((("quarter", DICT_STRING),), drop=("fisher_q",))  # no q-values by quarter


def score(counts: pd.DataFrame, config, fit, *, fit_crude=None) -> pd.DataFrame:
    """Run the statistics engine with the report's fixed prior and thresholds.

    With an ``expected`` column (stratified E) ``fit`` is the prior fitted on stratified E and ``fit_crude`` the
    one fitted on crude E (columns ``ebgm_crude``...); without it both equal the crude columns.
    """
    from pipeline.stats import disproportionality

    # multiplicity family: one substance and one level (PT rows apart from PT-group rows)
    level = np.where(counts["event"].astype(str).str.startswith(GROUP_PREFIX).to_numpy(), "\x1fgroup", "\x1fpt")
    family = counts["drug"].astype(str).to_numpy().astype(object) + level
    res, _ = disproportionality(counts, confidence_level=config.confidence_level,
                                thresholds=config.thresholds, mgps_likelihood=fit.likelihood,
                                mgps_fit=fit, q_family=family, mgps_fit_crude=fit_crude)
    if "expected_strat" not in res.columns:  # unstratified: the crude columns are the main ones
        res["expected_strat"] = res["expected"]
        for c in ("ebgm", "eb05", "eb95"):
            res[f"{c}_crude"] = res[c]
    return res


def split_events(df: pd.DataFrame) -> pd.DataFrame:
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


@dataclass
class Prior:
    """The report's MGPS prior, fitted once on the background (every ingredient x PT pair with a >= 1).

    ``fit`` is fitted on stratified E when ``strata["columns"]`` is not empty, else it is ``fit_crude``;
    ``background`` holds the background counts (with ``expected`` when stratified) that both were fitted on.
    """

    fit: object
    fit_crude: object
    strata: dict
    background: pd.DataFrame
    background_pairs: int


def fit_prior(background, strata: dict, likelihood: str) -> Prior:
    """Fit the prior on the background counts.

    Parameters
    ----------
    background : :class:`pipeline.reports.population.Background` (``counts``; its relations ``exposures`` and
        ``events`` of ``con`` give the stratified E, counted in that connection).
    strata : :func:`pipeline.reports.population.mgps_strata` (updated with the stratification's figures; its
        ``margins`` count the stratified E in the background's connection).
    likelihood : the MGPS likelihood.
    """
    from pipeline.stats import fit_mgps

    counts = background.counts
    frame = counts.to_pandas()
    if strata["columns"]:
        frame["expected"], info = strata["margins"].expected(background.exposures, background.events, frame)
        strata.update(info)
        fit = fit_mgps(frame, likelihood=likelihood)
        fit_crude = fit_mgps(counts, likelihood=likelihood)
    else:
        fit = fit_crude = fit_mgps(counts, likelihood=likelihood)
    return Prior(fit=fit, fit_crude=fit_crude, strata=strata, background=frame, background_pairs=counts.num_rows)


def all_pairs_table(prior: Prior, config) -> pd.DataFrame:
    """``all_pairs``: every background pair scored with the prior, by ingredient then PT."""
    all_pairs = split_events(score(prior.background, config, prior.fit, fit_crude=prior.fit_crude))
    return all_pairs.sort_values(["substance", "pt"], kind="mergesort").reset_index(drop=True)


def signals_table(focus_counts: pd.DataFrame, indications: pd.DataFrame, prior: Prior, config,
                  params: dict) -> pd.DataFrame:
    """``signals``: the focus grid scored with the prior, with ``a_indication``, in report order."""
    scored = score(focus_counts, config, prior.fit, fit_crude=prior.fit_crude).merge(
        indications, on=["drug", "event"], how="left")
    scored["a_indication"] = scored["a_indication"].fillna(0).astype(np.int64)
    return order_signals(split_events(scored), params["substances"], params["pt_groups"])


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


def focus_rows(signals: pd.DataFrame) -> list[dict]:
    """The PT-group rows as small JSON-able dicts (what the CLI/XCom carry)."""
    cols = ["substance", "pt_group", "a", "expected", "ror", "ror_lo", "ror_hi", "ic025", "eb05", *FLAG_COLUMNS]
    g = signals[signals["pt"].isna()][cols]
    return [jsonable(r) for r in g.to_dict("records")]


def count_outside(df: pd.DataFrame) -> int:
    """Rows whose EBGM lies outside [EB05, EB95] (possible for a mixture posterior; a counted warning)."""
    g, lo, hi = (df[c].to_numpy(np.float64) for c in ("ebgm", "eb05", "eb95"))
    return int(np.sum((g < lo) | (g > hi)))
