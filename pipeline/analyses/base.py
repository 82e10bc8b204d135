"""Tables every analysis reads, built once per report from the curated folder (independently of the main table's
own temp tables, so ``main`` in the sensitivity table re-derives the focus rows of ``signals.parquet``).

* ``an_rpt``: every usable report (>= 1 drug, >= 1 PT; in the study window when one is set) with ``in_analysis``
  and the DEMO attributes the subgroups and case tables use;
* ``an_fam``: ketamine-family drug mentions of those reports, every role (``drug`` = the substance, plus
  ``ketamine_family`` for any of them);
* ``an_fev``: the focus events of those reports: each configured PT group (``GROUP_PREFIX`` + name) and each
  member PT, with ``non_ind`` = the report has that PT (for a group: one of its PTs) other than as an indication;
* ``an_x``: the main exposure (report, drug) = ``an_fam`` in the exposure roles, analysis population only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pipeline.duck import sql_str
from pipeline.vocabulary import FAMILY


def sql_list(items) -> str:
    return ", ".join(sql_str(x) for x in items) or "NULL"


@dataclass
class Base:
    cur: Path
    drugs: list[str]            # focus substances (config order, ketamine_family last)
    roles: list[str]
    groups: list[str]
    events: list[str]           # grid events: group keys first, then member PTs seen in the population
    event_group: dict           # event -> pt_group (None for PT events)
    event_pt: dict              # event -> pt display (None for group events)
    confidence_level: float
    group_prefix: str

    def path(self, name: str) -> Path:
        return self.cur / f"{name}.parquet"

    def has(self, *names: str) -> bool:
        return all(self.path(n).exists() for n in names)

    def read(self, name: str) -> str:
        return f"read_parquet({sql_str(self.path(name))})"


def prepare(con, cur: Path, config, params: dict, group_prefix: str) -> Base:
    """Create ``an_rpt``, ``an_fam``, ``an_fev`` and ``an_x`` in ``con``; return what the analyses share."""
    from pipeline.curate.reactions import pt_groups_frame

    start = params.get("from_quarter")
    window = f" AND first_quarter >= {sql_str(start)}" if start else ""
    base = Base(cur=Path(cur), drugs=list(params["substances"]), roles=list(params["roles"]),
                groups=list(params["pt_groups"]), events=[], event_group={}, event_pt={},
                confidence_level=float(config.confidence_level), group_prefix=group_prefix)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE an_rpt AS
        SELECT report_id, in_analysis, sex, age_band, occp_cod, reporter_country, receipt_year,
               CASE WHEN regexp_full_match(event_dt, '[0-9]{{8}}') THEN try_strptime(event_dt, '%Y%m%d')::DATE END
                   AS event_date
        FROM {base.read('reports')} WHERE has_drug AND has_pt{window}""")
    singles = [s for s in base.drugs if s != FAMILY]
    fam_sql = (f" UNION ALL SELECT report_id, '{FAMILY}' AS drug, role_cod FROM f" if FAMILY in base.drugs else "")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE an_fam AS
        WITH f AS (SELECT DISTINCT i.report_id, i.substance, i.role_cod FROM {base.read('report_ingredients')} i
                   SEMI JOIN an_rpt USING (report_id) WHERE i.substance IS NOT NULL)
        SELECT DISTINCT * FROM (
            SELECT report_id, substance AS drug, role_cod FROM f WHERE substance IN ({sql_list(singles)}){fam_sql})""")
    groups = pt_groups_frame(config).to_pandas()
    groups = groups[groups["pt_group"].isin(base.groups)]
    con.register("an_groups", groups)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE an_fev AS
        WITH p AS (SELECT p.report_id, p.pt, p.pt_key, coalesce(p.is_indication, false) AS is_ind
                   FROM {base.read('report_pts')} p SEMI JOIN an_rpt USING (report_id)
                   WHERE p.pt_key IN (SELECT pt_key FROM an_groups))
        SELECT report_id, pt AS event, bool_or(NOT is_ind) AS non_ind FROM p GROUP BY 1, 2
        UNION ALL
        SELECT p.report_id, {sql_str(group_prefix)} || g.pt_group AS event, bool_or(NOT p.is_ind) AS non_ind
        FROM p JOIN an_groups g USING (pt_key) GROUP BY 1, 2""")
    con.unregister("an_groups")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE an_x AS
        SELECT DISTINCT f.report_id, f.drug FROM an_fam f JOIN an_rpt r USING (report_id)
        WHERE r.in_analysis AND f.role_cod IN ({sql_list(base.roles)})""")
    seen = [r[0] for r in con.execute(f"""
        SELECT DISTINCT e.event FROM an_fev e JOIN an_rpt r USING (report_id)
        WHERE r.in_analysis AND NOT starts_with(e.event, {sql_str(group_prefix)}) ORDER BY lower(e.event)""").fetchall()]
    base.events = [group_prefix + g for g in base.groups] + seen
    base.event_group = {group_prefix + g: g for g in base.groups}
    base.event_pt = {e: e for e in seen}
    return base


def label(df: pd.DataFrame, base: Base) -> pd.DataFrame:
    """``drug, event`` -> ``substance, pt_group, pt`` (group rows: pt null; PT rows: pt_group null)."""
    out = df.copy()
    ev = out.pop("event")
    out.insert(0, "substance", out.pop("drug"))
    out.insert(1, "pt_group", ev.map(base.event_group))
    out.insert(2, "pt", ev.map(base.event_pt))
    return out


def event_order(df: pd.DataFrame, base: Base) -> pd.DataFrame:
    """Rows in substance order, PT groups (config order) before PTs (alphabetical)."""
    s_rank = {s: i for i, s in enumerate(base.drugs)}
    e_rank = {e: i for i, e in enumerate(base.events)}
    key = df["substance"].map(s_rank).fillna(len(s_rank)) * 1e6 + \
        (df["pt_group"].map(lambda g: e_rank.get(base.group_prefix + g) if isinstance(g, str) else None)
         .fillna(df["pt"].map(e_rank)).fillna(1e5))
    return df.assign(_k=key).sort_values("_k", kind="mergesort").drop(columns="_k").reset_index(drop=True)
