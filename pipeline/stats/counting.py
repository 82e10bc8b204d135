"""Report-level 2×2 counting with DuckDB (exact int64, long format, never a dense drug × event matrix).

A report counts once per drug, once per event and once per (drug, event) pair, however many rows name them.
The functions here take pandas or Arrow inputs: they register them in a connection of their own and run the
counting SQL of :mod:`pipeline.stats.counting_sql`, which a caller that already holds its rows in DuckDB (the
report layer) calls directly on its connection.
"""

from __future__ import annotations

import duckdb
import pandas as pd
import pyarrow as pa

from pipeline import duck
from pipeline.errors import PipelineError

from .counting_sql import (COUNT_COLUMNS, MIN_STRATUM_REPORTS, count_pairs_in, stratified_expected_counts_in,
                           stratified_expected_in)

__all__ = ["count_pairs", "count_rows", "stratified_expected", "stratified_expected_counts", "MIN_STRATUM_REPORTS",
           "COUNT_COLUMNS"]


def _connect() -> duckdb.DuckDBPyConnection:
    # the command's [resources] (duck.configure), else the shipped defaults
    return duck.open_connection(label="counting")


def _as_arrow(x, name: str, needed: tuple[str, ...]) -> pa.Table:
    if isinstance(x, pa.Table):
        t = x
    elif isinstance(x, pd.DataFrame):
        t = pa.Table.from_pandas(x, preserve_index=False)
    else:
        raise PipelineError(f"{name}: expected a pandas DataFrame or a pyarrow Table, got {type(x).__name__}")
    missing = [c for c in needed if c not in t.column_names]
    if missing:
        raise PipelineError(f"{name}: missing column(s) {', '.join(missing)} (has {', '.join(t.column_names)})")
    return t.select(list(needed))


def _put(con, name: str, x, label: str, needed: tuple[str, ...]) -> str:
    """Register ``x`` (checked by :func:`_as_arrow`) in ``con`` as ``name``; return the name."""
    con.register(name, _as_arrow(x, label, needed))
    return name


def _strata_cols(strata, strata_cols) -> tuple[str, ...]:
    """The stratum columns: as given, else every column of ``strata`` but ``report_id``."""
    if strata is None or strata_cols:
        return tuple(strata_cols or ())
    names = strata.column_names if isinstance(strata, pa.Table) else strata.columns
    return tuple(c for c in names if c != "report_id")


def count_pairs(exposures, events, *, n_total: int | None = None, strata=None,
                strata_cols: tuple[str, ...] | list[str] | None = None, rows=None) -> pa.Table:
    """Count report-level 2×2 margins for every (drug, event) pair that co-occurs in at least one report.

    Parameters
    ----------
    exposures : DataFrame or Table with ``report_id, drug``
        One row per report and drug (duplicates allowed; counted once).
    events : DataFrame or Table with ``report_id, event``
        One row per report and event or event group (duplicates allowed; counted once). A PT group is counted
        once per report however many of its PTs the report has.
    n_total : int, optional
        Size of the analysis population. If omitted, the universe is the reports present in both ``exposures``
        and ``events`` (≥ 1 drug and ≥ 1 event), and margins are counted inside it. If given, the margins are
        counted on the tables as passed (the caller has restricted them to the population).
    strata : DataFrame or Table with ``report_id`` and the ``strata_cols``, optional
        One stratum per report (e.g. age band × sex × year). Adds ``expected`` = Σ_s n_drug,s·n_event,s/n_total,s
        (openEBGM style) and ``expected_unstratified``. Strata with < 50 reports give a warning (logged and
        stored in the table's schema metadata under ``warnings``).
    rows : DataFrame or Table with ``report_id, drug, event``, optional
        Instead of ``exposures``/``events`` (pass None for both): rows that already pair a drug with an event
        (the ``reports`` input of the command, openEBGM's ``processRaw``, pvda). ``a`` counts the reports with
        that row, margins count reports naming the drug / event, ``n_total`` the reports in the rows.
        Use :func:`count_rows`.

    Returns
    -------
    pyarrow.Table
        ``drug, event, a, n_drug, n_event, n_total`` (int64 counts), sorted by drug, event; one row per pair.

    References
    ----------
    Canida T, Ihrie J. openEBGM: An R implementation of the Gamma-Poisson Shrinker data mining model. R J
    2017;9:499-519 (``processRaw``: unique report ids per pair and margin; stratified E).
    """
    strata_cols = _strata_cols(strata, strata_cols)
    con = _connect()
    try:
        if rows is not None:
            exp_rel = evt_rel = None
            rows_rel = _put(con, "rows_in", rows, "rows", ("report_id", "drug", "event"))
        else:
            exp_rel = _put(con, "exp_in", exposures, "exposures", ("report_id", "drug"))
            evt_rel = _put(con, "evt_in", events, "events", ("report_id", "event"))
            rows_rel = None
        str_rel = None if strata is None else _put(con, "str_in", strata, "strata", ("report_id", *strata_cols))
        return count_pairs_in(con, exp_rel, evt_rel, n_total=n_total, strata=str_rel, strata_cols=strata_cols,
                              rows=rows_rel)
    finally:
        duck.close(con)


def count_rows(rows, *, strata=None, strata_cols=None) -> pa.Table:
    """Report-level counts from rows (report_id, drug, event) that pair drugs with events as given.

    Duplicate rows count once; see :func:`count_pairs` (``rows``) for the columns. ``strata`` may be the same
    table as ``rows`` when it carries the stratum columns.
    """
    if strata is not None and strata_cols:
        st = _as_arrow(strata, "strata", ("report_id", *strata_cols))
        strata = st
    if strata is None:
        fast = _count_rows_numpy(_as_arrow(rows, "rows", ("report_id", "drug", "event")))
        if fast is not None:
            return fast
    return count_pairs(None, None, strata=strata, strata_cols=strata_cols, rows=rows)


def _count_rows_numpy(t: pa.Table) -> pa.Table | None:
    """:func:`count_rows` without strata on integer codes: dictionary-encode the three columns, take distinct
    (report, drug, event) by sorting one packed int64 key, then margins by bincount of the distinct (report, drug)
    and (report, event) keys. Same result and order as the SQL path (which it replaces when the key fits in 63
    bits), at a fraction of its CPU time."""
    import numpy as np
    import pyarrow.compute as pc

    from .frequentist import unique_sorted as uniq

    t = t.filter(pc.and_(pc.is_valid(t.column("drug")), pc.is_valid(t.column("event"))))

    def codes(col, cast=False):
        arr = t.column(col)
        if cast and not pa.types.is_string(arr.type):
            arr = pc.cast(arr, pa.string())
        enc = pc.dictionary_encode(arr).combine_chunks()
        return enc.indices.to_numpy(zero_copy_only=False).astype(np.int64), enc.dictionary

    r, _ = codes("report_id")
    d, d_names = codes("drug", cast=True)
    e, e_names = codes("event", cast=True)
    nr, nd, ne = max(int(r.max(initial=-1)) + 1, 1), max(len(d_names), 1), max(len(e_names), 1)
    if float(nr) * nd * ne >= 2.0 ** 62:
        return None
    u = uniq((r * nd + d) * ne + e)
    ue, rd = u % ne, u // ne
    ud, ur = rd % nd, rd // nd
    n_total = int(uniq(ur).size)
    n_drug = np.bincount(uniq(rd) % nd, minlength=nd)
    n_event = np.bincount(uniq(ur * ne + ue) % ne, minlength=ne)
    pair, a = uniq(ud * ne + ue, return_counts=True)
    pd_, pe = pair // ne, pair % ne
    # order by drug name, then event name (as the SQL path's ORDER BY)
    d_rank = np.empty(nd, np.int64)
    d_rank[np.argsort(np.asarray(d_names.to_pylist(), dtype=object), kind="stable")] = np.arange(nd)
    e_rank = np.empty(ne, np.int64)
    e_rank[np.argsort(np.asarray(e_names.to_pylist(), dtype=object), kind="stable")] = np.arange(ne)
    order = np.lexsort((e_rank[pe], d_rank[pd_]))
    pd_, pe, a = pd_[order], pe[order], a[order]
    return pa.table({"drug": d_names.take(pa.array(pd_)), "event": e_names.take(pa.array(pe)),
                     "a": pa.array(a.astype(np.int64)), "n_drug": pa.array(n_drug[pd_].astype(np.int64)),
                     "n_event": pa.array(n_event[pe].astype(np.int64)),
                     "n_total": pa.array(np.full(len(a), n_total, dtype=np.int64))})


def stratified_expected(exposures, events, strata, pairs, strata_cols=None) -> pd.DataFrame:
    """Stratified expected count for arbitrary (drug, event) pairs, including pairs never reported together.

    Same universe and conventions as :func:`count_pairs` with ``strata``. Returns ``pairs`` with a column
    ``expected``.
    """
    strata_cols = _strata_cols(strata, None) if strata_cols is None else tuple(strata_cols)
    con = _connect()
    try:
        out = stratified_expected_in(con, _put(con, "exp_in", exposures, "exposures", ("report_id", "drug")),
                                     _put(con, "evt_in", events, "events", ("report_id", "event")),
                                     _put(con, "str_in", strata, "strata", ("report_id", *strata_cols)),
                                     _as_arrow(pairs, "pairs", ("drug", "event")), strata_cols)
    finally:
        duck.close(con)
    return pd.DataFrame(pairs)[["drug", "event"]].astype(str).merge(out, on=["drug", "event"], how="left")


def stratified_expected_counts(exposures, events, strata, pairs, *, chunk: int | None = None):
    """Stratified expected count E = Σ_s n_drug,s · n_event,s / n_total,s for given (drug, event) pairs.

    Unlike :func:`count_pairs` with ``strata`` the universe is given: ``strata`` has one row per report of the
    analysis population (``report_id``, ``stratum``), so n_total,s counts every report of stratum s, whether or
    not it names a drug or event of interest (the report layer's population). Margins n_drug,s and n_event,s
    count distinct reports of ``exposures`` (``report_id, drug``) and ``events`` (``report_id, event``) inside
    stratum s. Works for any pairs, including pairs never reported together (a = 0). Vectorised: per-drug and
    per-event margin matrices over the strata, then a row-wise dot product in chunks (``chunk`` pairs;
    default: :func:`pipeline.stats.counting_sql.stratified_expected_counts_in`'s memory bound).

    Returns
    -------
    (expected, info) : numpy.ndarray of float64 aligned with ``pairs``, and a dict with ``n_strata`` and
    ``small_strata`` (strata with fewer than :data:`MIN_STRATUM_REPORTS` reports).

    References
    ----------
    DuMouchel W. Am Stat 1999;53:177-190 (stratified expected counts).
    Canida T, Ihrie J. R J 2017;9:499-519 (openEBGM ``processRaw`` with strata).
    """
    # margins are counted by DuckDB over the Arrow inputs: the report-level rows of a whole history (tens of
    # millions) never become Python objects
    pr = pairs.select(["drug", "event"]).to_pandas() if isinstance(pairs, pa.Table) else \
        pd.DataFrame(pairs)[["drug", "event"]]
    con = _connect()
    try:
        str_rel = _put(con, "str_in", strata, "strata", ("report_id", "stratum"))
        return stratified_expected_counts_in(con, _put(con, "exp_in", exposures, "drug", ("report_id", "drug")),
                                             _put(con, "evt_in", events, "event", ("report_id", "event")),
                                             str_rel, pr, chunk=chunk)
    finally:
        duck.close(con)
