"""Report-level 2×2 counting inside a caller's DuckDB connection, on relations it already holds.

The one implementation of the counting SQL: :mod:`pipeline.stats.counting` registers Arrow/pandas inputs in a
fresh connection and calls these functions; the report layer calls them on the analysis population's own
relations, so the report-level rows stay in DuckDB (within its ``memory_limit``, spilling to its
``temp_directory``) and only the per-(drug, event) result comes back into Python.

A relation argument is a table or view name of the connection, or a ``SELECT`` statement over them. The
intermediate tables of a call are temporary tables with a name of their own, dropped when the call returns.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import uuid

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

__all__ = ["count_pairs_in", "stratified_expected_in", "stratified_expected_counts_in", "StratumMargins",
           "MIN_STRATUM_REPORTS", "COUNT_COLUMNS"]

COUNT_COLUMNS = ("drug", "event", "a", "n_drug", "n_event", "n_total")
MIN_STRATUM_REPORTS = 50
#: bytes of one gathered pairs × strata matrix per step of the stratified E's dot product
GATHER_BYTES = 32 * 2**20

_QUERY = re.compile(r"^\s*((select|with|from|values)\b|\()", re.IGNORECASE)


def _rel(relation: str) -> str:
    """``relation`` usable after FROM: a name as is, a statement as a subquery."""
    return f"({relation})" if _QUERY.match(relation) else relation


class _Scratch:
    """The intermediate tables of one call in the caller's connection.

    ``s.create("e", sql)`` makes the temporary table ``s.e``; names carry a random prefix so that they never meet
    the caller's relations or another call's, and every table (and registered input) is dropped on exit.
    """

    def __init__(self, con):
        self.con = con
        self._prefix = f"cnt_{uuid.uuid4().hex[:10]}_"
        self._tables: list[str] = []
        self._views: list[str] = []
        self._views_sql: list[str] = []

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._prefix + name

    def create(self, name: str, sql: str) -> str:
        self._tables.append(self._prefix + name)
        self.con.execute(f"CREATE TEMP TABLE {self._prefix + name} AS {sql}")
        return self._prefix + name

    def alias(self, name: str, relation: str) -> str:
        """``s.name`` reads ``relation`` itself (a view, nothing copied)."""
        self._views_sql.append(self._prefix + name)
        self.con.execute(f"CREATE TEMP VIEW {self._prefix + name} AS SELECT * FROM {_rel(relation)}")
        return self._prefix + name

    def register(self, name: str, table: pa.Table) -> str:
        self._views.append(self._prefix + name)
        self.con.register(self._prefix + name, table)
        return self._prefix + name

    def drop(self, name: str) -> None:
        """Drop ``s.name`` (a table of :meth:`create` or an input of :meth:`register`) before the call ends."""
        full = self._prefix + name
        if full in self._tables:
            self._tables.remove(full)
            self.con.execute(f"DROP TABLE IF EXISTS {full}")
        if full in self._views:
            self._views.remove(full)
            self.con.unregister(full)

    def __enter__(self) -> _Scratch:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # after a failure (out of memory, say) the drops may fail too: the first error is the one to report
        with contextlib.suppress(Exception) if exc_type is not None else contextlib.nullcontext():
            for t in reversed(self._tables):
                self.con.execute(f"DROP TABLE IF EXISTS {t}")
            for t in self._views_sql:
                self.con.execute(f"DROP VIEW IF EXISTS {t}")
            for v in self._views:
                self.con.unregister(v)


def count_pairs_in(con, exposures: str | None, events: str | None, *, n_total: int | None = None,
                   strata: str | None = None, strata_cols: tuple[str, ...] = (), rows: str | None = None,
                   distinct: bool = False) -> pa.Table:
    """:func:`pipeline.stats.count_pairs` on relations of ``con``.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        The connection holding the relations; the counting runs within its memory limit.
    exposures, events : str
        Relations with ``report_id, drug`` and ``report_id, event`` (None for both when ``rows`` is given).
    n_total : int, optional
        Size of the analysis population (margins counted on the relations as given); default: the reports with
        ≥ 1 drug and ≥ 1 event.
    strata : str, optional
        Relation with ``report_id`` and the ``strata_cols``: adds ``expected`` and ``expected_unstratified``.
    strata_cols : tuple of str
        The stratum columns of ``strata``.
    rows : str, optional
        Relation with ``report_id, drug, event`` that already pairs drugs with events.
    distinct : bool
        With ``n_total``: the caller guarantees ``exposures`` and ``events`` hold distinct rows without nulls, with
        text ``drug`` and ``event``, so they are read as they are instead of being copied through a DISTINCT
        (at the whole history, two copies of ~50 M rows).

    Returns
    -------
    pyarrow.Table
        ``drug, event, a, n_drug, n_event, n_total`` (int64), one row per co-reported pair, by drug and event;
        strata warnings in the schema metadata under ``warnings``.
    """
    strata_cols = tuple(strata_cols)
    with _Scratch(con) as s:
        if rows is not None:
            s.create("r", f"""SELECT DISTINCT report_id, CAST(drug AS VARCHAR) AS drug, CAST(event AS VARCHAR) AS event
                              FROM {_rel(rows)} WHERE drug IS NOT NULL AND event IS NOT NULL""")
            s.create("e", f"SELECT DISTINCT report_id, drug FROM {s.r}")
            s.create("v", f"SELECT DISTINCT report_id, event FROM {s.r}")
            total = con.execute(f"SELECT count(DISTINCT report_id) FROM {s.r}").fetchall()[0][0]
        elif n_total is None:  # the universe: reports with a drug and an event
            s.create("e", f"""SELECT DISTINCT report_id, CAST(drug AS VARCHAR) AS drug FROM {_rel(exposures)}
                              WHERE drug IS NOT NULL AND report_id IN
                                  (SELECT report_id FROM {_rel(events)} WHERE event IS NOT NULL)""")
            s.create("v", f"""SELECT DISTINCT report_id, CAST(event AS VARCHAR) AS event FROM {_rel(events)}
                              WHERE event IS NOT NULL AND report_id IN (SELECT report_id FROM {s.e})""")
            total = con.execute(f"SELECT count(DISTINCT report_id) FROM {s.e}").fetchall()[0][0]
        else:
            if distinct:
                s.alias("e", exposures)
                s.alias("v", events)
            else:
                s.create("e", f"""SELECT DISTINCT report_id, CAST(drug AS VARCHAR) AS drug FROM {_rel(exposures)}
                                  WHERE drug IS NOT NULL""")
                s.create("v", f"""SELECT DISTINCT report_id, CAST(event AS VARCHAR) AS event FROM {_rel(events)}
                                  WHERE event IS NOT NULL""")
            total = int(n_total)
            if total < 0:
                raise PipelineError(f"n_total must be non-negative, got {total}")
        s.create("nd", f"SELECT drug, count(*)::BIGINT AS n_drug FROM {s.e} GROUP BY drug")
        s.create("ne", f"SELECT event, count(*)::BIGINT AS n_event FROM {s.v} GROUP BY event")
        if rows is not None:  # pairs as the rows give them (openEBGM processRaw, pvda)
            s.create("p", f"SELECT drug, event, count(*)::BIGINT AS a FROM {s.r} GROUP BY drug, event")
        else:  # every drug of a report with every event of the report
            s.create("p", f"""SELECT e.drug, v.event, count(*)::BIGINT AS a
                              FROM {s.e} e JOIN {s.v} v USING (report_id) GROUP BY e.drug, v.event""")
        if n_total is not None:
            worst = con.execute(f"""SELECT greatest((SELECT max(n_drug) FROM {s.nd}), (SELECT max(n_event) FROM {s.ne}),
                                    (SELECT count(DISTINCT report_id) FROM {s.e}))""").fetchall()[0][0]
            if worst is not None and worst > total:
                raise PipelineError(f"n_total={total} is smaller than a margin or the number of exposed reports "
                                    f"({worst})")
        sql = f"""
            SELECT p.drug, p.event, p.a, nd.n_drug, ne.n_event, {total}::BIGINT AS n_total
            FROM {s.p} p JOIN {s.nd} nd USING (drug) JOIN {s.ne} ne USING (event)
        """
        warnings: list[str] = []
        if strata is not None:
            if n_total is not None:
                raise PipelineError("strata need the universe from the data (leave n_total unset)")
            sql, warnings = _stratified_sql(s, sql, strata, strata_cols)
        table = con.sql(sql + " ORDER BY 1, 2").to_arrow_table()
        if n_total is not None and table.num_rows:
            bad = con.execute(f"""SELECT count(*) FROM {s.p} JOIN {s.nd} USING (drug) JOIN {s.ne} USING (event)
                                  WHERE {total} - n_drug - n_event + a < 0""").fetchall()[0][0]
            if bad:
                raise PipelineError(f"n_total={total} is too small: {bad} pair(s) would have d < 0")
    if warnings:
        for w in warnings:
            log.warning("%s", w)
        table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                               b"warnings": json.dumps(warnings).encode()})
    return table


def _stratified_sql(s: _Scratch, base_sql: str, strata: str, cols: tuple[str, ...]) -> tuple[str, list[str]]:
    """``base_sql`` (pairs ``s.p`` with margins) with the stratified ``expected`` over the reports of ``s.e``."""
    if not cols:
        raise PipelineError("strata: no stratum columns given")
    con = s.con
    key = " || '\x1f' || ".join(f"coalesce(CAST({c} AS VARCHAR), '')" for c in cols)
    s.create("s_all", f"SELECT DISTINCT report_id, {key} AS s FROM {_rel(strata)}")
    multi = con.execute(f"SELECT count(*) FROM (SELECT report_id FROM {s.s_all} GROUP BY report_id "
                        f"HAVING count(*) > 1)").fetchall()[0][0]
    if multi:
        raise PipelineError(f"strata: {multi} report(s) have more than one value of ({', '.join(cols)})")
    missing = con.execute(f"SELECT count(DISTINCT report_id) FROM {s.e} WHERE report_id NOT IN "
                          f"(SELECT report_id FROM {s.s_all})").fetchall()[0][0]
    if missing:
        raise PipelineError(f"strata: {missing} report(s) have no stratum")
    s.create("ns", f"""SELECT s, count(DISTINCT report_id)::BIGINT AS n_s
                       FROM {s.e} JOIN {s.s_all} USING (report_id) GROUP BY s""")
    s.create("nds", f"""SELECT drug, s, count(*)::BIGINT AS nd_s FROM {s.e} JOIN {s.s_all} USING (report_id)
                        GROUP BY drug, s""")
    s.create("nes", f"""SELECT event, s, count(*)::BIGINT AS ne_s FROM {s.v} JOIN {s.s_all} USING (report_id)
                        GROUP BY event, s""")
    small = con.execute(f"SELECT s, n_s FROM {s.ns} WHERE n_s < ? ORDER BY s", [MIN_STRATUM_REPORTS]).fetchall()
    warnings = [f"stratum {v.replace(chr(31), ' × ')!r} has {n} report(s) (< {MIN_STRATUM_REPORTS})"
                for v, n in small]
    sql = f"""
        WITH base AS ({base_sql}),
        se AS (
            SELECT p.drug, p.event, sum(nds.nd_s::DOUBLE * nes.ne_s::DOUBLE / ns.n_s::DOUBLE) AS expected
            FROM {s.p} p JOIN {s.nds} nds ON nds.drug = p.drug JOIN {s.nes} nes ON nes.event = p.event AND nes.s = nds.s
                   JOIN {s.ns} ns ON ns.s = nds.s
            GROUP BY p.drug, p.event)
        SELECT base.*, coalesce(se.expected, 0.0) AS expected,
               base.n_drug::DOUBLE * base.n_event::DOUBLE / base.n_total::DOUBLE AS expected_unstratified
        FROM base LEFT JOIN se USING (drug, event)
    """
    return sql, warnings


def stratified_expected_in(con, exposures: str, events: str, strata: str, pairs: pa.Table,
                           strata_cols: tuple[str, ...]) -> pd.DataFrame:
    """:func:`pipeline.stats.stratified_expected` on relations of ``con``; ``pairs`` (``drug, event``) is an
    Arrow table. Returns ``drug, event, expected`` for the distinct pairs."""
    with _Scratch(con) as s:
        s.register("pairs", pairs)
        s.create("e", f"""SELECT DISTINCT report_id, CAST(drug AS VARCHAR) AS drug FROM {_rel(exposures)}
                          WHERE report_id IN (SELECT report_id FROM {_rel(events)})""")
        s.create("v", f"""SELECT DISTINCT report_id, CAST(event AS VARCHAR) AS event FROM {_rel(events)}
                          WHERE report_id IN (SELECT report_id FROM {s.e})""")
        s.create("p", f"SELECT DISTINCT CAST(drug AS VARCHAR) AS drug, CAST(event AS VARCHAR) AS event FROM {s.pairs}")
        sql, _ = _stratified_sql(s, f"SELECT drug, event, 1 AS n_drug, 1 AS n_event, 1 AS n_total FROM {s.p}",
                                 strata, tuple(strata_cols))
        return con.sql(sql).df()[["drug", "event", "expected"]]


def stratified_expected_counts_in(con, exposures: str, events: str, strata: str, pairs: pd.DataFrame, *,
                                  chunk: int | None = None) -> tuple[np.ndarray, dict]:
    """:func:`pipeline.stats.stratified_expected_counts` on relations of ``con``.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        The connection holding the relations.
    exposures, events : str
        Relations with ``report_id, drug`` and ``report_id, event``.
    strata : str
        Relation with ``report_id, stratum``: one row per report of the analysis population.
    pairs : pandas.DataFrame
        ``drug, event``: the pairs to give E for (a = 0 allowed).
    chunk : int, optional
        Pairs per step of the row-wise dot product; default: as many as keep each step's gathered
        pairs × strata matrices within :data:`GATHER_BYTES`.

    Returns
    -------
    (expected, info) : numpy.ndarray of float64 aligned with ``pairs``, and a dict with ``n_strata``,
    ``small_strata`` and ``smallest`` (strata with fewer than :data:`MIN_STRATUM_REPORTS` reports).
    """
    with StratumMargins(con, strata) as margins:
        return margins.expected(exposures, events, pairs, chunk=chunk)


class StratumMargins:
    """Distinct reports per (key, stratum) of relations of ``con``, over one set of strata; each relation is counted
    once however many pair sets ask for its margins (the report's prior and focus grid share their PT margins).

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        The connection holding the relations.
    strata : str
        Relation with ``report_id, stratum``: one row per report of the analysis population; a missing stratum
        is a level of its own, spelled as ``str(None)`` like any other value.
    distinct : bool
        The relations given to :meth:`expected` hold distinct rows (no DISTINCT copy is made).

    Its tables live until :meth:`close` (or the end of a ``with`` block).
    """

    def __init__(self, con, strata: str, *, distinct: bool = False):
        self._s = s = _Scratch(con)
        self._distinct = distinct
        self._cache: dict[tuple[str, str], tuple[pd.Index, np.ndarray]] = {}
        try:
            s.create("st0", f"SELECT report_id, coalesce(CAST(stratum AS VARCHAR), 'None') AS stratum "
                            f"FROM {_rel(strata)}")
            if con.execute(f"SELECT count(*) - count(DISTINCT report_id) FROM {s.st0}").fetchall()[0][0]:
                raise PipelineError("strata: a report has more than one stratum")
            s.create("lv", f"""SELECT stratum, count(*)::BIGINT AS n,
                                      (row_number() OVER (ORDER BY stratum) - 1)::INTEGER AS i
                               FROM {s.st0} GROUP BY stratum""")
            s.create("st", f"SELECT report_id, lv.i FROM {s.st0} JOIN {s.lv} lv USING (stratum)")
            s.drop("st0")
            lv = con.execute(f"SELECT stratum, n FROM {s.lv} ORDER BY i").fetchnumpy()
        except BaseException as exc:
            self.close(type(exc))
            raise
        self.levels = [str(v) for v in lv["stratum"]]
        self.n_s = lv["n"].astype(np.float64)

    def close(self, exc_type=None) -> None:
        """Drop the tables (after an error, quietly: the first error is the one to report)."""
        self._s.__exit__(exc_type, None, None)
        self._cache.clear()

    def __enter__(self) -> StratumMargins:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(exc_type)

    def info(self) -> dict:
        """``n_strata``, ``small_strata`` and the five ``smallest`` (stratum, reports)."""
        small = [(v, int(n)) for v, n in zip(self.levels, self.n_s) if n < MIN_STRATUM_REPORTS]
        return {"n_strata": len(self.levels), "small_strata": len(small),
                "smallest": sorted(small, key=lambda t: t[1])[:5]}

    def margins(self, relation: str, col: str) -> tuple[pd.Index, np.ndarray]:
        """Every key of ``relation``'s ``col`` and the keys × strata matrix of distinct reports (strata in the
        order of :attr:`levels`)."""
        if (relation, col) in self._cache:
            return self._cache[(relation, col)]
        s, con = self._s, self._s.con
        rows = (f"(SELECT report_id, {col} FROM {_rel(relation)})" if self._distinct
                else f"(SELECT DISTINCT report_id, {col} FROM {_rel(relation)})")
        # aggregate first: the (key, stratum) cells are far fewer than the report rows
        s.create("agg", f"""SELECT CAST(x.{col} AS VARCHAR) AS key, coalesce(st.i, -1) AS i, count(*)::BIGINT AS n
                            FROM {rows} x LEFT JOIN {s.st} st USING (report_id)
                            WHERE x.{col} IS NOT NULL GROUP BY ALL""")
        try:
            outside = con.execute(f"SELECT coalesce(sum(n), 0) FROM {s.agg} WHERE i < 0").fetchall()[0][0]
            if outside:  # every report of st has a level: no stratum = a report outside the population
                raise PipelineError(f"strata: {outside} {col} row(s) of reports outside the population")
            keys = pd.Index([r[0] for r in con.execute(f"SELECT DISTINCT key FROM {s.agg} ORDER BY key").fetchall()])
            # positions, not names, come back: the (key, stratum) cells of a whole history are millions of rows
            dictionary = s.register("keys", pa.table({"key": pa.array(list(keys), pa.string()),
                                                      "k": pa.array(np.arange(len(keys), dtype=np.int64))}))
            got = con.execute(f"SELECT d.k, a.i, a.n FROM {s.agg} a JOIN {dictionary} d USING (key)").fetchnumpy()
        finally:
            s.drop("agg")
            s.drop("keys")
        k, i, n = (np.asarray(got[c], dtype=np.int64) for c in ("k", "i", "n"))
        n_strata = len(self.levels)
        matrix = np.bincount(k * n_strata + i, weights=n.astype(np.float64),
                             minlength=len(keys) * n_strata).reshape(len(keys), n_strata)
        self._cache[(relation, col)] = (keys, matrix)
        return keys, matrix

    def _stacked(self, relations, col: str) -> tuple[pd.Index, np.ndarray]:
        """The margins of one relation, or of several whose keys do not overlap, as one matrix."""
        parts = [self.margins(r, col) for r in ((relations,) if isinstance(relations, str) else relations)]
        if len(parts) == 1:
            return parts[0]
        keys = parts[0][0].append([p[0] for p in parts[1:]])
        if keys.has_duplicates:
            raise PipelineError(f"strata: the {col} relations share key(s), e.g. {keys[keys.duplicated()][0]!r}")
        return keys, np.vstack([p[1] for p in parts])

    def expected(self, exposures, events, pairs: pd.DataFrame, *, chunk: int | None = None
                 ) -> tuple[np.ndarray, dict]:
        """E = Σ_s n_drug,s · n_event,s / n_total,s for ``pairs`` (``drug, event``; a = 0 allowed; a key no
        relation has gets E = 0). ``exposures`` and ``events`` are a relation or a tuple of relations with
        disjoint keys. Returns E aligned with ``pairs`` and :meth:`info`."""
        d_keys, nd = self._stacked(exposures, "drug")
        e_keys, ne = self._stacked(events, "event")
        n_strata = len(self.levels)
        # a last zero row for keys without reports
        nd = np.vstack([nd / self.n_s, np.zeros((1, n_strata))])  # every level has >= 1 report
        ne = np.vstack([ne, np.zeros((1, n_strata))])
        di = d_keys.get_indexer(pairs["drug"].astype(str))
        ei = e_keys.get_indexer(pairs["event"].astype(str))
        di[di < 0], ei[ei < 0] = len(d_keys), len(e_keys)
        # the gathered rows nd[di], ne[ei] are pairs x strata: a step of a fixed number of pairs would take GBs
        # with hundreds of strata
        step = chunk or max(1, GATHER_BYTES // (8 * max(n_strata, 1)))
        out = np.empty(len(pairs))
        for lo in range(0, len(pairs), step):
            hi = min(lo + step, len(pairs))
            out[lo:hi] = np.einsum("ij,ij->i", nd[di[lo:hi]], ne[ei[lo:hi]])
        return out, self.info()
