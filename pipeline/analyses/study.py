"""``pipeline study FILE.toml``: run a published study's design on our curated tables and write its table beside
the values the paper published.

A study file (``studies/*.toml``) holds ``[study]`` (name, title, doi, substance, from_quarter, cutoff_quarter,
roles, min_a, pts, comparator, published_n) and ``[[published]]`` rows (pt, ror, ror_lo, ror_hi, ic, ic025,
ic975; any may be absent). The population is the analysis population of the database as it stood at the end of
``cutoff_quarter`` (:func:`pipeline.reports.dating.curated_for`), cases first received in ``from_quarter`` or later;
exposure = the substance in ``roles``; the table holds every PT with a >= ``min_a`` (or the listed ``pts``) and
every published PT, with ROR (Woolf), PRR (Katz) and IC (Norén) from the same functions as the main report.
Output: ``DIR/studies/<name>/study.parquet``, ``study.csv`` and ``study.json``.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import PipelineError

STUDY_KEYS = {"name": str, "title": str, "doi": str, "substance": str, "from_quarter": str, "cutoff_quarter": str,
              "roles": list, "min_a": int, "pts": list, "comparator": str, "published_n": int}
PUBLISHED_KEYS = ("ror", "ror_lo", "ror_hi", "ic", "ic025", "ic975")
COLUMNS = ["pt", "a", "b", "c", "d", "ror", "ror_lo", "ror_hi", "ic", "ic025", "ic975", "prr", "prr_lo", "prr_hi",
           *[f"published_{k}" for k in PUBLISHED_KEYS], "ror_ci_overlap", "ic_ci_overlap"]


def load_study(path) -> dict:
    """Read and check a study file; a bad file is a one-line :class:`PipelineError`."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PipelineError(f"study {p}: cannot read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PipelineError(f"study {p}: not valid TOML ({exc})") from None
    unknown = set(data) - {"study", "published"}
    if unknown or "study" not in data:
        raise PipelineError(f"study {p}: needs a [study] table (and optional [[published]] rows); "
                            f"unknown: {', '.join(sorted(unknown)) or 'none'}")
    st = data["study"]
    for k, t in STUDY_KEYS.items():
        if k not in st:
            raise PipelineError(f"study {p}: key 'study.{k}' is missing")
        if not isinstance(st[k], t) or isinstance(st[k], bool):
            raise PipelineError(f"study {p}: key 'study.{k}' must be {t.__name__}, got {st[k]!r}")
    extra = set(st) - set(STUDY_KEYS)
    if extra:
        raise PipelineError(f"study {p}: key 'study.{sorted(extra)[0]}' is unknown")
    if st["min_a"] < 1:
        raise PipelineError(f"study {p}: key 'study.min_a' must be >= 1")
    pub = data.get("published", [])
    for i, row in enumerate(pub):
        if "pt" not in row or any(k not in ("pt", *PUBLISHED_KEYS) for k in row):
            raise PipelineError(f"study {p}: published row {i + 1} needs 'pt' and only {', '.join(PUBLISHED_KEYS)}")
        for k in PUBLISHED_KEYS:
            if k in row and not isinstance(row[k], (int, float)):
                raise PipelineError(f"study {p}: published row {i + 1} '{k}' must be a number")
    return {"study": st, "published": pub, "path": str(p.resolve())}


def _overlap(lo1, hi1, lo2, hi2):
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in (lo1, hi1, lo2, hi2)):
        return None
    return bool(lo1 <= hi2 and lo2 <= hi1)


def run_study(data_dir, config, study_path, *, progress: bool = False) -> dict:
    import duckdb

    from pipeline.analyses.cells import add_stats
    from pipeline.layout import DataDir
    from pipeline.reports import dating
    from pipeline.reports.params import resolve_params
    from pipeline.vocabulary import FAMILY

    doc = load_study(study_path)
    st = doc["study"]
    dd = data_dir if isinstance(data_dir, DataDir) else DataDir.of(data_dir)
    params = resolve_params(config, substances=[st["substance"]], roles=st["roles"],
                            cutoff_quarter=st["cutoff_quarter"] or None, from_quarter=st["from_quarter"] or None)
    cur = dating.curated_for(dd, config, params["cutoff_quarter"], progress=progress)
    if not (cur / "reports.parquet").exists():
        raise PipelineError(f"study: no curated tables in {cur} (run `pipeline curate` first)")
    q = lambda name: "read_parquet('" + str(cur / f"{name}.parquet").replace("'", "''") + "')"  # noqa: E731
    window = f" AND first_quarter >= '{params['from_quarter']}'" if params["from_quarter"] else ""
    roles = ", ".join(f"'{r}'" for r in params["roles"])
    sub = st["substance"]
    sub_where = "i.substance IS NOT NULL" if sub == FAMILY else f"i.substance = '{sub}'"
    con = duckdb.connect()
    try:
        con.execute(f"CREATE TEMP TABLE pop AS SELECT report_id FROM {q('reports')} WHERE in_analysis{window}")
        con.execute(f"""CREATE TEMP TABLE x AS SELECT DISTINCT i.report_id FROM {q('report_ingredients')} i
                        SEMI JOIN pop USING (report_id) WHERE {sub_where} AND i.role_cod IN ({roles})""")
        con.execute(f"""CREATE TEMP TABLE e AS SELECT DISTINCT p.report_id, p.pt, p.pt_key FROM {q('report_pts')} p
                        SEMI JOIN pop USING (report_id)""")
        n_total = con.execute("SELECT count(*) FROM pop").fetchone()[0]
        n_x = con.execute("SELECT count(*) FROM x").fetchone()[0]
        if n_total == 0:
            raise PipelineError(f"study {st['name']}: the population is empty (window {params['from_quarter']}"
                                f"-{params['cutoff_quarter']}; curated tables in {cur})")
        df = con.execute("""
            SELECT e.pt, lower(e.pt) AS pt_key, count(*) FILTER (WHERE x.report_id IS NOT NULL) AS a,
                   count(*) AS n_event
            FROM e LEFT JOIN x USING (report_id) GROUP BY 1, 2""").df()
        cmp = None
        if st["comparator"]:
            comps = {c.name: c for c in config.analyses.comparators}
            if st["comparator"] not in comps:
                raise PipelineError(f"study {st['name']}: comparator {st['comparator']!r} is not a configured "
                                    f"comparison ({', '.join(comps) or 'none'})")
            ings = ", ".join("'" + i.replace("'", "''") + "'" for i in comps[st["comparator"]].comparator)
            con.execute(f"""CREATE TEMP TABLE k AS SELECT DISTINCT i.report_id FROM {q('report_ingredients')} i
                            SEMI JOIN pop USING (report_id) WHERE i.ingredient IN ({ings}) AND i.role_cod IN ({roles})""")
            cmp = con.execute("""
                WITH so AS (SELECT report_id FROM x ANTI JOIN k USING (report_id)),
                     ko AS (SELECT report_id FROM k ANTI JOIN x USING (report_id))
                SELECT e.pt, count(*) FILTER (WHERE e.report_id IN (SELECT report_id FROM so)) AS cmp_a,
                       count(*) FILTER (WHERE e.report_id IN (SELECT report_id FROM ko)) AS cmp_c,
                       (SELECT count(*) FROM so) AS n_s, (SELECT count(*) FROM ko) AS n_k
                FROM e GROUP BY 1""").df()
    finally:
        con.close()
    pub = {p["pt"].lower(): p for p in doc["published"]}
    wanted = {p.lower() for p in st["pts"]}
    unseen = [p for k, p in pub.items() if k not in set(df["pt_key"])]  # a published PT absent here: a = 0
    if unseen:
        df = pd.concat([df, pd.DataFrame({"pt": [p["pt"] for p in unseen], "pt_key": [p["pt"].lower() for p in unseen],
                                          "a": 0, "n_event": 0})], ignore_index=True)
    keep = (df["a"] >= st["min_a"]) if not wanted else df["pt_key"].isin(wanted)
    df = df[keep | df["pt_key"].isin(pub)].copy()
    df["b"] = n_x - df["a"]
    df["c"] = df["n_event"] - df["a"]
    df["d"] = n_total - n_x - df["c"]
    df = add_stats(df, float(config.confidence_level))
    for k in PUBLISHED_KEYS:
        df[f"published_{k}"] = df["pt_key"].map(lambda key: float(pub.get(key, {}).get(k, np.nan)))
    df["ror_ci_overlap"] = [_overlap(*v) for v in zip(df["ror_lo"], df["ror_hi"], df["published_ror_lo"],
                                                       df["published_ror_hi"])]
    df["ic_ci_overlap"] = [_overlap(*v) for v in zip(df["ic025"], df["ic975"], df["published_ic025"],
                                                      df["published_ic975"])]
    cols = list(COLUMNS)
    if cmp is not None:
        df = df.merge(cmp, on="pt", how="left")
        for c_ in ("cmp_a", "cmp_c", "n_s", "n_k"):
            df[c_] = df[c_].fillna(0).astype(np.int64)
        from pipeline.stats.frequentist import ror

        with np.errstate(divide="ignore", invalid="ignore"):
            df["cmp_ror"], df["cmp_ror_lo"], df["cmp_ror_hi"] = ror(
                df["cmp_a"].to_numpy(np.int64), (df["n_s"] - df["cmp_a"]).to_numpy(np.int64),
                df["cmp_c"].to_numpy(np.int64), (df["n_k"] - df["cmp_c"]).to_numpy(np.int64),
                float(config.confidence_level))
        cols += ["cmp_a", "cmp_c", "cmp_ror", "cmp_ror_lo", "cmp_ror_hi"]
    df = df.sort_values(["published_ror", "ror_lo"], ascending=[False, False], na_position="last",
                        kind="mergesort")
    df = df.sort_values("published_ror", key=lambda s: s.isna(), kind="mergesort").reset_index(drop=True)
    out = df[cols]
    target = dd.root / "studies" / st["name"]
    target.mkdir(parents=True, exist_ok=True)
    from pipeline.analyses import to_arrow
    from pipeline.atomic import write_json, write_parquet

    table = to_arrow(out.assign(ror_ci_overlap=out["ror_ci_overlap"].map(_tri),
                                ic_ci_overlap=out["ic_ci_overlap"].map(_tri)))
    write_parquet(table, target / "study.parquet", metadata={"faers.study": st["name"],
                                                             "faers.config_sha256": config.sha256})
    out.to_csv(target / "study.csv", index=False)
    summary = {"study": st, "study_file": doc["path"], "curated_dir": str(cur), "n_total": int(n_total),
               "n_exposed": int(n_x), "published_n": st.get("published_n"), "rows": len(out),
               "config_sha256": config.sha256, "outputs": {"parquet": str(target / "study.parquet"),
                                                          "csv": str(target / "study.csv")}}
    write_json(summary, target / "study.json")
    return {**summary, "table": out}


def _tri(v):
    """Overlap flag as text (yes/no, null = no published interval), so the Parquet column stays one type."""
    return None if v is None else ("yes" if v else "no")


def table_text(result: dict, limit: int = 40) -> str:
    from pipeline.reports.html import fmt

    t = result["table"].head(limit)
    head = f"{'PT':32} {'a':>6} {'ROR [95% CI]':>28} {'published ROR [CI]':>30} {'IC [IC025, IC975]':>24} {'published IC':>22}"
    lines = [f"study {result['study']['name']}: {result['study']['title']} (doi:{result['study']['doi']})",
             f"exposed reports {result['n_exposed']:,} (published {result['published_n'] or '—'}), population "
             f"{result['n_total']:,}", head]
    for r in t.to_dict("records"):
        ours = f"{fmt(r['ror'])} [{fmt(r['ror_lo'])}, {fmt(r['ror_hi'])}]"
        theirs = (f"{fmt(r['published_ror'])} [{fmt(r['published_ror_lo'])}, {fmt(r['published_ror_hi'])}]"
                  if not math.isnan(r["published_ror"]) else "—")
        ic = f"{fmt(r['ic'])} [{fmt(r['ic025'])}, {fmt(r['ic975'])}]"
        pic = (f"{fmt(r['published_ic'])} [{fmt(r['published_ic025'])}, {fmt(r['published_ic975'])}]"
               if not math.isnan(r["published_ic"]) else "—")
        lines.append(f"{str(r['pt'])[:32]:32} {int(r['a']):>6} {ours:>28} {theirs:>30} {ic:>24} {pic:>22}")
    lines.append(f"table: {result['outputs']['parquet']} (and study.csv). Disproportionality is not causation.")
    return "\n".join(lines)


def cmd_study(args) -> int:
    from pipeline.layout import DataDir
    from pipeline.settings import load_config

    result = run_study(DataDir.of(args.data_dir), load_config(args.config), args.file,
                       progress=not getattr(args, "quiet", False))
    print(table_text(result))
    return 0


def register(subparsers) -> None:
    h = ("run a published study's design (studies/*.toml: window, roles, minimum a, PTs, comparator) and write "
         "its table beside the published values: DIR/studies/<name>/")
    p = subparsers.add_parser("study", help=h, description=h)
    p.set_defaults(func=cmd_study)
    p.add_argument("file", metavar="FILE.toml", help="study file, e.g. studies/gastaldon2021.toml")
    p.add_argument("--config", metavar="FILE", help="configuration file (default: the shipped one)")
    p.add_argument("--data-dir", metavar="DIR", help="data directory (default: $FAERS_DATA_DIR or ./data)")
