"""The analysis population of one report, counted in DuckDB: exposures, events, the 2x2 cells, the funnel.

:func:`register_population` is the one owner of the report's relations: it creates them in the report's
connection and returns a :class:`Population` naming them. The focus statistics here, the trend
(:func:`pipeline.reports.trend.cumulative_trend`) and the analyses' ``outcomes`` table receive that object and read
the relations through its attributes; none of them creates, replaces or drops them. They live until the builder
closes the connection.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import duck
from pipeline.duck import sql_str
from pipeline.errors import PipelineError
from pipeline.layout import DataDir
from pipeline.reports.dating import CUTOFF_RULE, FROM_RULE
from pipeline.reports.scoring import DICT_STRING, GROUP_PREFIX
from pipeline.vocabulary import FAMILY

FUNNEL_SCHEMA = pa.schema([("step", pa.int64()), ("stage", DICT_STRING), ("name", pa.string()),
                           ("reports_in", pa.int64()), ("reports_out", pa.int64()), ("reason", pa.string())])


def connect(config, data_dir: DataDir) -> duckdb.DuckDBPyConnection:
    """The report's DuckDB connection, with the configured memory limit, threads and spill folder."""
    resources = getattr(config, "resources", None)
    # the report's counting runs in this connection; a library function that opens its own (stats.count_pairs
    # on Arrow inputs) follows the same limits
    duck.configure(resources, data_dir)
    return duck.open_connection(resources, data_dir, label="signals")


@dataclass(frozen=True)
class Population:
    """The analysis population as relations of ``con`` (temporary tables, owned by :func:`register_population`).

    Attributes
    ----------
    con : the connection that holds the relations.
    n_total : reports in the population.
    quarters : the database's quarters from the from-quarter on (the trend's quarters; the last is the data cut-off).
    groups : the selected PT groups' members (``pt_group``, ``pt_key``), also registered as ``group_members``.
    reports : ``(report_id, quarter)``, one row per report.
    background_exposures : ``(report_id, drug)``, drug = ingredient in an exposure role.
    focus_exposures : ``(report_id, drug)``, drug = focus substance (``ketamine_family`` = any of them).
    events : ``(report_id, event, pt_key, is_indication)``, event = PT.
    group_events : ``(report_id, event, is_indication)``, event = ``GROUP_PREFIX`` + PT group name.
    group_members : ``(pt_group, pt_key)``.
    """

    con: duckdb.DuckDBPyConnection
    n_total: int
    quarters: list[str]
    groups: pd.DataFrame
    reports: str = "pop"
    background_exposures: str = "bg_exp"
    focus_exposures: str = "focus_exp"
    events: str = "evt"
    group_events: str = "gevt"
    group_members: str = "cfg_groups"

    def pt_rows(self) -> str:
        """SQL of ``(report_id, event)``: PTs."""
        return f"SELECT report_id, event FROM {self.events}"

    def group_rows(self) -> str:
        """SQL of ``(report_id, event)``: PT groups."""
        return f"SELECT report_id, event FROM {self.group_events}"

    def all_events(self) -> str:
        """SQL of ``(report_id, event)``: PTs and PT groups."""
        return f"{self.pt_rows()} UNION ALL {self.group_rows()}"


def register_population(con, cur: Path, config, params: dict) -> Population:
    """Create the population's relations in ``con`` from the curated folder ``cur``.

    Parameters
    ----------
    con : the report's connection (:func:`connect`).
    cur : the curated folder of the run's database (:func:`pipeline.reports.dating.curated_for`).
    config, params : the config and the report's parameters (:func:`pipeline.reports.params.resolve_params`).

    Raises
    ------
    PipelineError
        When a from-quarter meets curated tables without ``first_quarter``, or the population is empty.
    """
    from pipeline.curate.reactions import pt_groups_frame

    start = params.get("from_quarter")
    if start and "first_quarter" not in pq.read_schema(cur / "reports.parquet").names:
        raise PipelineError(f"--from-quarter needs curated reports with first_quarter; {cur} predates it "
                            f"(run `pipeline curate`)")
    where_from = f" AND first_quarter >= {sql_str(start)}" if start else ""
    roles = ", ".join(sql_str(r) for r in params["roles"])
    con.execute(f"""
        CREATE TEMP TABLE pop AS
        SELECT report_id, quarter FROM read_parquet({sql_str(cur / 'reports.parquet')})
        WHERE in_analysis{where_from}""")
    # the exposures straight from the file: only the few focus rows are kept beside the background's distinct ones
    ing = (f"SELECT i.report_id, i.ingredient, i.substance "
           f"FROM read_parquet({sql_str(cur / 'report_ingredients.parquet')}) i "
           f"SEMI JOIN pop USING (report_id) WHERE i.role_cod IN ({roles})")
    con.execute(f"CREATE TEMP TABLE bg_exp AS SELECT DISTINCT report_id, ingredient AS drug FROM ({ing}) "
                f"WHERE ingredient IS NOT NULL")
    con.execute(f"CREATE TEMP TABLE ing AS SELECT * FROM ({ing}) WHERE substance IS NOT NULL")
    singles = [s for s in params["substances"] if s != FAMILY]
    parts = []
    if singles:
        parts.append(f"SELECT DISTINCT report_id, substance AS drug FROM ing "
                     f"WHERE substance IN ({', '.join(sql_str(s) for s in singles)})")
    if FAMILY in params["substances"]:
        fam = ", ".join(sql_str(s) for s in config.substances)
        parts.append(f"SELECT DISTINCT report_id, '{FAMILY}' AS drug FROM ing WHERE substance IN ({fam})")
    con.execute("CREATE TEMP TABLE focus_exp AS " + " UNION ALL ".join(parts))
    # curated report_pts has one row per (report, pt_key) (built so in curate.reactions, checked by a critical
    # curated expectation) and pt follows pt_key: distinct (report, event) rows without a DISTINCT over ~50 M rows
    con.execute(f"""
        CREATE TEMP TABLE evt AS
        SELECT p.report_id, p.pt AS event, p.pt_key, p.is_indication FROM read_parquet({sql_str(cur / 'report_pts.parquet')}) p
        SEMI JOIN pop USING (report_id)""")
    groups = pt_groups_frame(config).to_pandas()
    groups = groups[groups["pt_group"].isin(params["pt_groups"])]
    con.register("cfg_groups", groups)
    con.execute(f"""
        CREATE TEMP TABLE gevt AS
        SELECT e.report_id, {sql_str(GROUP_PREFIX)} || g.pt_group AS event,
               bool_or(coalesce(e.is_indication, false)) AS is_indication
        FROM evt e JOIN cfg_groups g USING (pt_key) GROUP BY 1, 2""")
    n_total = con.execute("SELECT count(*) FROM pop").fetchall()[0][0]
    if n_total == 0:
        raise PipelineError("signals: the analysis population is empty"
                            + (f" up to {params['cutoff_quarter']}" if params["cutoff_quarter"] else "")
                            + (f" from {params['from_quarter']}" if params["from_quarter"] else "")
                            + f" (curated tables in {cur})")
    # the database's quarters (those of its raw inputs), from the from-quarter on
    quarters = sorted({str(r.get("quarter")) for r in (_read_json(cur / "manifest.json").get("inputs") or [])
                       if r.get("quarter")})
    if not quarters:
        quarters = [r[0] for r in con.execute("SELECT DISTINCT quarter FROM pop ORDER BY 1").fetchall()]
    # (a case can be first received after the last file when its init_fda_dt is later: keep the last quarter)
    quarters = [q for q in quarters if not start or q >= start] or quarters[-1:]
    return Population(con=con, n_total=int(n_total), quarters=quarters, groups=groups)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def count_in_population(pop: Population, exposures: str, events: str) -> pa.Table:
    """``stats.count_pairs`` on relations of ``pop.con`` with the universe = the analysis population (``n_total``
    reports, every one with a PT); only the per-pair counts leave DuckDB. ``exposures`` and ``events`` are distinct
    rows (as every relation of :class:`Population`)."""
    from pipeline.stats.counting_sql import count_pairs_in

    return count_pairs_in(pop.con, exposures, events, n_total=pop.n_total, distinct=True)


@dataclass(frozen=True)
class Background:
    """Every ingredient x PT pair with a >= 1 (``counts``) and the relations of ``con`` it was counted from
    (``exposures``: report_id, drug; ``events``: report_id, event)."""

    con: duckdb.DuckDBPyConnection
    exposures: str
    events: str
    counts: pa.Table


def background(pop: Population, params: dict) -> Background:
    """The background counts. Raises PipelineError when the population has no ingredient x PT pair."""
    exposures = f"SELECT report_id, drug FROM {pop.background_exposures}"
    events = pop.pt_rows()
    counts = count_in_population(pop, exposures, events)
    if counts.num_rows == 0:
        raise PipelineError("signals: no ingredient x PT pair in the analysis population "
                            f"(roles {'+'.join(params['roles'])})")
    return Background(con=pop.con, exposures=exposures, events=events, counts=counts)


def mgps_strata(pop: Population, cur: Path, config, params: dict) -> dict:
    """The MGPS strata of the analysis population (``[mgps] strata``): ``columns``, a ``relation`` (the SQL of
    (report_id, stratum) over ``pop.con``) and its ``margins`` (:class:`pipeline.stats.counting_sql.StratumMargins`
    over the population's distinct relations, shared by the prior and the focus grid); none with the
    zero-inclusive likelihood, whose zero cells come from crude margins."""
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
    where_from = f" AND first_quarter >= {sql_str(start)}" if start else ""
    key = " || '|' || ".join(f"coalesce(CAST({c} AS VARCHAR), '?')" for c in cols)
    # SQL, not rows: the counting reads it inside the connection (one row per report of the population)
    relation = (f"SELECT report_id, {key} AS stratum FROM read_parquet({sql_str(cur / 'reports.parquet')}) "
                f"WHERE in_analysis{where_from}")
    from pipeline.stats.counting_sql import StratumMargins

    return {"columns": cols, "relation": relation, "margins": StratumMargins(pop.con, relation, distinct=True),
            "note": "E = sum over strata s of n_drug,s * n_event,s / n_total,s (a missing value is its own stratum)"}


def release_margins(strata: dict) -> None:
    """Drop the stratum margins' tables (a report's ~15 M-row stratum table) once the focus grid has its E."""
    margins = strata.pop("margins", None)
    if margins is not None:
        margins.close()


def focus_counts(pop: Population, params: dict, strata: dict) -> pd.DataFrame:
    """Counts for the full focus grid: every focus substance x every PT and every PT group (a = 0 included),
    with the stratified ``expected`` when ``strata`` has columns."""
    exposures = f"SELECT report_id, drug FROM {pop.focus_exposures}"
    # a only: the margins come from the whole population below; the join starts from the few focus reports
    pairs = pop.con.sql(f"""SELECT f.drug, e.event, count(*)::BIGINT AS a
                            FROM {pop.focus_exposures} f JOIN ({pop.all_events()}) e USING (report_id)
                            GROUP BY 1, 2""").df()
    n_drug = dict(pop.con.execute(f"SELECT drug, count(*) FROM {pop.focus_exposures} GROUP BY 1").fetchall())
    n_event = pop.con.sql(f"""SELECT event, count(*)::BIGINT AS n_event FROM {pop.events} GROUP BY 1
                              UNION ALL SELECT event, count(*)::BIGINT FROM {pop.group_events} GROUP BY 1""").df()
    group_events = pd.DataFrame({"event": [GROUP_PREFIX + g for g in params["pt_groups"]]})
    n_event = group_events.merge(n_event, on="event", how="left").pipe(
        lambda g: pd.concat([g, n_event[~n_event["event"].str.startswith(GROUP_PREFIX)]]))
    n_event["n_event"] = n_event["n_event"].fillna(0).astype(np.int64)
    grid = pd.DataFrame({"drug": params["substances"]}).merge(n_event, how="cross")
    grid["n_drug"] = grid["drug"].map(lambda s: int(n_drug.get(s, 0))).astype(np.int64)
    grid = grid.merge(pairs, on=["drug", "event"], how="left")
    grid["a"] = grid["a"].fillna(0).astype(np.int64)
    grid["n_total"] = np.int64(pop.n_total)
    grid = grid[["drug", "event", "a", "n_drug", "n_event", "n_total"]]
    if strata["columns"]:
        # the PT margins are the prior's (same relation); the group margins are counted here
        grid["expected"] = strata["margins"].expected(exposures, (pop.pt_rows(), pop.group_rows()), grid)[0]
    return grid


def indication_counts(pop: Population) -> pd.DataFrame:
    """(drug, event, a_indication): focus pairs whose PT is also an indication in the report."""
    return pop.con.sql(f"""
        SELECT f.drug, e.event, count(*)::BIGINT AS a_indication
        FROM {pop.focus_exposures} f
        JOIN (SELECT report_id, event FROM {pop.events} WHERE is_indication
              UNION ALL SELECT report_id, event FROM {pop.group_events} WHERE is_indication) e USING (report_id)
        GROUP BY 1, 2""").df()


def funnel(pop: Population, cur: Path, params: dict, signals: pd.DataFrame) -> pd.DataFrame:
    """The curated funnel (stage ``curate``) plus the report's own steps (stage ``report``)."""
    curated = pq.read_table(cur / "funnel.parquet").to_pandas()
    rows = [{"step": int(r.step), "stage": "curate", "name": r.name, "reports_in": int(r.reports_in),
             "reports_out": int(r.reports_out), "reason": r.reason} for r in curated.itertuples()]
    step = max([r["step"] for r in rows], default=0)
    analysis = pop.con.execute(f"SELECT count(*) FROM read_parquet({sql_str(cur / 'reports.parquet')}) "
                               f"WHERE in_analysis").fetchall()[0][0]
    cut, start = params["cutoff_quarter"], params.get("from_quarter")
    step += 1
    rows.append({"step": step, "stage": "report", "name": "data cut-off", "reports_in": int(analysis),
                 "reports_out": int(analysis),
                 "reason": (CUTOFF_RULE.format(q=cut) + "; the curate steps above are that database's" if cut else
                            "no cut-off: every quarter of the curated tables")})
    step += 1
    rows.append({"step": step, "stage": "report", "name": "study window", "reports_in": int(analysis),
                 "reports_out": int(pop.n_total),
                 "reason": FROM_RULE.format(q=start) if start else "no from-quarter: every case"})
    fam = signals.loc[signals["substance"] == FAMILY, "n_drug"]
    if len(fam):
        step += 1
        rows.append({"step": step, "stage": "report", "name": "ketamine-family exposure (report)",
                     "reports_in": int(pop.n_total), "reports_out": int(fam.iloc[0]),
                     "reason": f"reports with a ketamine-family drug in role {'+'.join(params['roles'])}"})
    return pd.DataFrame(rows, columns=[f.name for f in FUNNEL_SCHEMA])
