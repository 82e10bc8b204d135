"""Dating: ``signals --cutoff-quarter`` (the database as it stood then), ``--from-quarter`` (study window) and the
trend (each case at its version as of each quarter).

History: the project's synthetic mirror, 2019Q1-2019Q4 (follow-ups, re-ships, deleted-case lists, same-quarter
cross-manufacturer clones), plus late cross-case duplicates copied into 2019Q3 from 2019Q1 cases (half of them
without ``init_fda_dt``). Every expectation is recomputed from files: a fresh data directory holding only the
quarters <= the cut-off, as-of curations, or the raw DEMO text parsed here.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.layout import DataDir
from pipeline.quarters import parse_range

QUARTERS = ["2019Q1", "2019Q2", "2019Q3", "2019Q4"]
CUT = "2019Q2"
KEY = ["substance", "pt", "pt_group"]
STATS = ["a", "b", "c", "d", "n_total", "prr", "ror", "ror_lo", "ic", "ic025", "ebgm", "eb05"]

pytestmark = pytest.mark.slow


def _zip_name(mirror: Path, q: str) -> Path:
    [p] = [p for p in mirror.glob("*.zip") if p.name.lower() == f"faers_ascii_{q.lower()}.zip"]
    return p


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def _table(members: dict[str, bytes], table: str) -> tuple[str, list[str]]:
    [name] = [n for n in members if Path(n).name.upper().startswith(table) and n.upper().endswith(".TXT")
              and "/" in n and not n.lower().startswith("deleted")]
    lines = members[name].decode("latin-1").replace("\r\n", "\n").rstrip("\n").split("\n")
    return name, lines


def _header(line: str) -> list[str]:
    return line.removeprefix("\xef\xbb\xbf").split("$")  # a UTF-8 BOM, read as latin-1


def demo_rows(mirror: Path) -> pd.DataFrame:
    """Every DEMO row of the mirror, parsed here (text split on '$')."""
    frames = []
    for q in QUARTERS:
        _, lines = _table(_members(_zip_name(mirror, q)), "DEMO")
        head = _header(lines[0])
        rows = [dict(zip(head, ln.split("$"))) for ln in lines[1:]]
        frames.append(pd.DataFrame(rows).assign(quarter=q))
    return pd.concat(frames, ignore_index=True)


def add_late_duplicates(mirror: Path, n: int = 40, first_caseid: int = 99_000_000) -> list[int]:
    """Copy ``n`` 2019Q1 cases (never followed up) into 2019Q3 as new caseids from another sender: cross-case
    duplicates that exist only once 2019Q3 is in the database. Returns the new caseids."""
    demo = demo_rows(mirror)
    seen = demo.groupby("caseid")["quarter"].nunique()
    once = set(seen[seen == 1].index)
    q1 = demo[(demo["quarter"] == "2019Q1") & demo["caseid"].isin(once)]
    ok = q1[(q1["event_dt"].str.len() == 8) & q1["sex"].isin(["M", "F"]) & (q1["age"] != "")
            & (q1["reporter_country"] != "") & (q1["reporter_country"] != "COUNTRY NOT SPECIFIED")]
    src = ok.drop_duplicates("caseid").head(n)
    assert len(src) == n
    new = {r.primaryid: (first_caseid + i, f"{first_caseid + i}1") for i, r in enumerate(src.itertuples())}
    m1, path3 = _members(_zip_name(mirror, "2019Q1")), _zip_name(mirror, "2019Q3")
    m3 = _members(path3)
    for table in ("DEMO", "DRUG", "REAC", "OUTC", "RPSR", "THER", "INDI"):
        _, lines1 = _table(m1, table)
        name3, lines3 = _table(m3, table)
        head = _header(lines1[0])
        added = []
        for ln in lines1[1:]:
            f = ln.split("$")
            if f[0] not in new:
                continue
            caseid, pid = new[f[0]]
            f[0], f[1] = pid, str(caseid)
            if table == "DEMO":
                rec = dict(zip(head, f))
                rec.update(caseversion="1", i_f_code="I", fda_dt="20190815", mfr_num=f"LATE-{caseid}",
                           mfr_sndr="ANOTHER SENDER", init_fda_dt="" if caseid % 2 else "20190815")
                f = [rec[h] for h in head]
            added.append("$".join(f))
        m3[name3] = ("\r\n".join(lines3 + added) + "\r\n").encode("latin-1")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in m3.items():
            zf.writestr(name, data)
    path3.write_bytes(buf.getvalue())
    return [c for c, _ in new.values()]


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    from pipeline.curate import curate
    from pipeline.ingest import ingest
    from pipeline.settings import load_config
    from pipeline.sources import fetch
    from pipeline.synthetic import write_mirror

    root = tmp_path_factory.mktemp("dating")
    mirror = root / "mirror"
    write_mirror(mirror, parse_range("2019Q1:2019Q4"), reports_per_quarter=1500, seed=11, progress=False)
    late = add_late_duplicates(mirror)
    config = load_config()
    dirs = {}
    for name, quarters in (("full", None), ("fresh", parse_range(f"2019Q1:{CUT}"))):
        dd = DataDir.of(root / name)
        fetch(str(mirror), dd, quarters=quarters, progress=False)
        ingest(dd, progress=False, validate=False)  # the raw suites are tested elsewhere
        curate(dd, config, progress=False)
        dirs[name] = dd
    return {"root": root, "mirror": mirror, "late": late, "config": config, **dirs}


def _read(path: Path, name: str) -> pd.DataFrame:
    df = pd.read_parquet(path / f"{name}.parquet")
    for c in df.columns:
        if isinstance(df[c].dtype, pd.CategoricalDtype) or df[c].dtype == object or str(df[c].dtype) == "str":
            df[c] = df[c].astype(object).where(df[c].notna(), None)
    return df


def _asof(history, q: str) -> Path:
    from pipeline.curate import curate

    return Path(curate(history["full"], history["config"], progress=False, as_of=q)["curated_dir"])


def test_history_has_late_follow_ups_deletions_and_duplicates(history):
    full = _read(history["full"].curated, "reports")
    asof = _read(_asof(history, CUT), "reports")
    m = asof.merge(full, on="report_id", how="left", suffixes=("", "_full"), indicator=True)
    both = m[m["_merge"] == "both"]
    assert (m["_merge"] == "left_only").sum() > 0  # deleted by a list of a later quarter
    assert (both["primaryid"] != both["primaryid_full"]).sum() > 50  # followed up after the cut-off
    appear = both["dup_group_id"].isna() & both["dup_group_id_full"].notna()
    assert appear.sum() >= 30  # cross-case duplicates that only exist once later quarters are in
    assert not set(history["late"]) & set(asof["report_id"])
    assert set(history["late"]) <= set(full["report_id"])


def test_cutoff_equals_a_fresh_directory_holding_only_those_quarters(history):
    from pipeline.reports import build_report

    config = history["config"]
    cut = Path(build_report(history["full"], config, cutoff_quarter=CUT)["report_dir"])
    fresh = Path(build_report(history["fresh"], config)["report_dir"])
    for name in ("signals", "all_pairs", "trend"):
        a, b = _read(cut, name), _read(fresh, name)
        keys = KEY + (["quarter"] if name == "trend" else [])
        a, b = a.sort_values(keys, na_position="first"), b.sort_values(keys, na_position="first")
        assert len(a) == len(b) > 0, name
        assert a[keys].fillna("").to_numpy().tolist() == b[keys].fillna("").to_numpy().tolist(), name
        for c in ("a", "b", "c", "d", "n_total"):
            np.testing.assert_array_equal(a[c].to_numpy(), b[c].to_numpy(), err_msg=f"{name}.{c}")
        for c in STATS[5:]:
            np.testing.assert_allclose(a[c].to_numpy(float), b[c].to_numpy(float), rtol=1e-9, equal_nan=True,
                                       err_msg=f"{name}.{c}")
    # the as-of curation is the fresh directory's curation, table for table
    asof = _asof(history, CUT)
    for name, key in (("reports", ["report_id"]), ("report_ingredients", ["report_id", "ingredient", "role_cod"]),
                      ("report_pts", ["report_id", "pt_key"]), ("versions", ["version_id"])):
        a = _read(asof, name).sort_values(key).reset_index(drop=True)
        b = _read(history["fresh"].curated, name).sort_values(key).reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b, check_dtype=False, obj=name)
    # what the old rule (kept version's quarter <= cut-off) counted: cases followed up later vanished
    full = _read(history["full"].curated, "reports")
    old_rule = int((full["in_analysis"] & (full["quarter"] <= CUT)).sum())
    n_cut = int(_read(cut, "all_pairs")["n_total"].iloc[0])
    assert n_cut > old_rule
    import json

    m = json.loads((cut / "manifest.json").read_text())
    assert m["parameters"]["cutoff_quarter"] == CUT and m["data_cutoff"] == CUT
    assert m["dating"]["curated_dir"] == f"curated_asof/{CUT}"
    assert "as it stood at the end of 2019Q2" in (cut / "report.html").read_text()
    f = _read(cut, "funnel")
    assert "as it stood at the end of 2019Q2" in f.loc[f["name"] == "data cut-off", "reason"].iloc[0]


def test_asof_curation_is_cached_and_keyed_by_its_own_quarters(history):
    from pipeline.curate import curate

    dd, config = history["full"], history["config"]
    assert curate(dd, config, progress=False, as_of=CUT)["changed"] is False
    later = next(dd.raw_table("DEMO").glob("quarter=2019Q4/part.parquet"))
    os.utime(later, ns=(later.stat().st_atime_ns, later.stat().st_mtime_ns + 10**9))
    assert curate(dd, config, progress=False, as_of=CUT)["changed"] is False  # a later quarter is not an input
    earlier = next(dd.raw_table("DEMO").glob("quarter=2019Q1/part.parquet"))
    os.utime(earlier, ns=(earlier.stat().st_atime_ns, earlier.stat().st_mtime_ns + 10**9))
    assert curate(dd, config, progress=False, as_of=CUT)["changed"] is True


def _alive(v: pd.DataFrame, q: str) -> pd.DataFrame:
    return v[(v["valid_from"] <= q) & (v["valid_to"].isna() | (v["valid_to"].fillna("9999") > q))]


def test_version_spans_are_the_as_of_databases(history):
    """At every quarter q, the versions alive = the cases (kept primaryid and quarter) of the curation as of q."""
    v = _read(history["full"].curated, "versions")
    assert not v.duplicated(["report_id", "valid_from"]).any()
    final = v[v["is_final"]]
    full = _read(history["full"].curated, "reports")
    assert sorted(final["report_id"]) == sorted(full["report_id"])
    for q in QUARTERS:
        cur = history["full"].curated if q == QUARTERS[-1] else _asof(history, q)
        rep = _read(cur, "reports")
        alive = _alive(v, q)
        assert not alive["report_id"].duplicated().any()
        got = set(map(tuple, alive[["report_id", "primaryid", "quarter", "first_quarter"]].to_numpy().tolist()))
        want = set(map(tuple, rep[["report_id", "primaryid", "quarter", "first_quarter"]].to_numpy().tolist()))
        assert got == want, q


def test_trend_counts_each_case_at_its_version_as_of_each_quarter(history):
    """Brute force per quarter q: the as-of-q curation's drugs and PTs, the report's duplicate flags."""
    from pipeline.curate.reactions import pt_groups_frame
    from pipeline.reports import build_report

    config = history["config"]
    report = Path(build_report(history["full"], config)["report_dir"])
    tr = _read(report, "trend")
    sig = _read(report, "signals")
    full = _read(history["full"].curated, "reports")
    dup_kept = dict(zip(full["report_id"], full["is_dup_kept"]))
    groups = pt_groups_frame(config).to_pandas()
    fam = set(config.substances)
    for q in QUARTERS:
        cur = history["full"].curated if q == QUARTERS[-1] else _asof(history, q)
        rep = _read(cur, "reports")
        pop = set(rep.loc[rep["has_drug"] & rep["has_pt"]
                          & rep["report_id"].map(lambda r: bool(dup_kept.get(r, True))), "report_id"])
        ing = _read(cur, "report_ingredients")
        exposed: dict[str, set] = {}
        for r in ing.itertuples():
            if r.report_id in pop and r.role_cod in ("PS", "SS") and r.substance is not None:
                exposed.setdefault(r.substance, set()).add(r.report_id)
                if r.substance in fam:
                    exposed.setdefault("ketamine_family", set()).add(r.report_id)
        events: dict[tuple, set] = {}
        pts = _read(cur, "report_pts")
        by_key = groups.groupby("pt_key")["pt_group"].apply(list).to_dict()
        for r in pts.itertuples():
            if r.report_id in pop:
                events.setdefault(("pt", r.pt), set()).add(r.report_id)
                for g in by_key.get(r.pt_key, []):
                    events.setdefault(("group", g), set()).add(r.report_id)
        rows = tr[tr["quarter"] == q]
        assert len(rows) > 0
        for r in rows.itertuples():
            ev = events.get(("group", r.pt_group) if r.pt_group else ("pt", r.pt), set())
            ex = exposed.get(r.substance, set())
            assert (r.a, r.a + r.b, r.a + r.c, r.n_total) == (len(ex & ev), len(ex), len(ev), len(pop)), (q, r)
    last = tr[tr["quarter"] == QUARTERS[-1]].merge(sig, on=KEY, suffixes=("", "_s"))
    for c in ("a", "b", "c", "d"):
        np.testing.assert_array_equal(last[c], last[c + "_s"])


def _quarter(d: str) -> str | None:
    try:
        day = dt.datetime.strptime(d, "%Y%m%d")
    except ValueError:
        return None
    return f"{day.year}Q{(day.month - 1) // 3 + 1}"


def test_from_quarter_is_a_study_window_for_report_and_background(history):
    from pipeline.reports import build_report

    start = "2019Q3"
    config = history["config"]
    report = Path(build_report(history["full"], config, from_quarter=start)["report_dir"])
    demo = demo_rows(history["mirror"])
    demo["pid"] = demo["primaryid"].astype(np.int64)
    first_seen = demo.groupby(demo["caseid"].astype(np.int64))["quarter"].min().to_dict()
    init = {(p, q): d for p, q, d in zip(demo["pid"], demo["quarter"], demo["init_fda_dt"])}
    rep = _read(history["full"].curated, "reports")
    first = {r.report_id: _quarter(init[(r.primaryid, r.quarter)]) or first_seen[r.report_id]
             for r in rep.itertuples()}
    assert dict(zip(rep["report_id"], rep["first_quarter"])) == first
    late = set(history["late"])
    assert {first[c] for c in late} == {"2019Q3"}  # with and without init_fda_dt
    pop = {r for r, ok in zip(rep["report_id"], rep["in_analysis"]) if ok and first[r] >= start}
    assert 0 < len(pop) < int(rep["in_analysis"].sum())
    ap = _read(report, "all_pairs")
    assert (ap["n_total"] == len(pop)).all()
    ing = _read(history["full"].curated, "report_ingredients")
    drugs: dict[str, set] = {}
    for r in ing.itertuples():
        if r.report_id in pop and r.role_cod in ("PS", "SS"):
            drugs.setdefault(r.ingredient, set()).add(r.report_id)
    pts = _read(history["full"].curated, "report_pts")
    events: dict[str, set] = {}
    for r in pts.itertuples():
        if r.report_id in pop:
            events.setdefault(r.pt, set()).add(r.report_id)
    sample = ap.sample(min(len(ap), 300), random_state=1)
    for r in sample.itertuples():
        ex, ev = drugs[r.substance], events[r.pt]
        assert (r.a, r.a + r.b, r.a + r.c) == (len(ex & ev), len(ex), len(ev))
    tr = _read(report, "trend")
    assert sorted(tr["quarter"].unique()) == ["2019Q3", "2019Q4"]
    f = _read(report, "funnel")
    window = f[f["name"] == "study window"].iloc[0]
    assert window["reports_out"] == len(pop) and "2019Q3" in window["reason"]


def test_cli_flags_and_bad_input(history, capsys):
    from pipeline.cli import main

    dd = str(history["full"].root)
    assert main(["--quiet", "signals", "--data-dir", dd, "--cutoff-quarter", "2019Q3", "--from-quarter",
                 "2019Q2"]) == 0
    assert "signals:" in capsys.readouterr().out
    assert main(["signals", "--data-dir", dd, "--from-quarter", "2019Q9"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "quarter" in err[0]
    assert main(["signals", "--data-dir", dd, "--cutoff-quarter", "2018Q4"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "empty" in err[0]


# ---------------------------------------------------------------------------------------------------------------
# random raw histories (the curation tests' generator: LAERS blank versions, re-ships, deletions, blank dates)
# ---------------------------------------------------------------------------------------------------------------

def _as_sets(rows: pd.DataFrame, key: str, cols: list[str]) -> dict:
    out: dict = {}
    for r in rows[[key] + cols].itertuples(index=False):
        out.setdefault(r[0], set()).add(tuple(r[1:]))
    return out


@pytest.mark.parametrize("seed", [3, 17, 101, 2024, 4711])
def test_spans_equal_as_of_curations_on_random_histories(tmp_path, seed):
    import random

    from pipeline.curate import curate
    from pipeline.settings import load_config
    from tests.test_curate import QUARTERS as RAW_QUARTERS
    from tests.test_curate import _random_raw

    raw = _random_raw(random.Random(seed))
    dd = DataDir.of(tmp_path / "data")
    raw.write(dd)
    config = load_config()
    curate(dd, config, progress=False)
    v = _read(dd.curated, "versions")
    vi = _read(dd.curated, "version_ingredients").merge(v[["version_id", "report_id"]], on="version_id")
    vp = _read(dd.curated, "version_pts").merge(v[["version_id", "report_id"]], on="version_id")
    ri, rp = _read(dd.curated, "report_ingredients"), _read(dd.curated, "report_pts")
    demo_quarters = sorted({q for q, t in raw.rows if t == "DEMO"})
    for q in [q for q in RAW_QUARTERS if q >= demo_quarters[0]]:
        rep = _read(Path(curate(dd, config, progress=False, as_of=q)["curated_dir"]), "reports")
        alive = _alive(v, q)
        cols = ["report_id", "primaryid", "quarter", "first_quarter", "has_drug", "has_pt"]
        assert sorted(map(tuple, alive[cols].to_numpy().tolist())) == \
            sorted(map(tuple, rep[cols].to_numpy().tolist())), (seed, q)
        # each alive version's drugs and PTs are those of the as-of-q database
        asof = Path(curate(dd, config, progress=False, as_of=q)["curated_dir"])
        want_i = _as_sets(_read(asof, "report_ingredients"), "report_id", ["ingredient", "substance", "role_cod"])
        want_p = _as_sets(_read(asof, "report_pts"), "report_id", ["pt_key", "is_indication"])
        final = set(alive.loc[alive["is_final"], "report_id"])
        old = set(alive.loc[~alive["is_final"], "version_id"])
        got_i = {**{k: s for k, s in _as_sets(ri, "report_id", ["ingredient", "substance", "role_cod"]).items()
                    if k in final},
                 **_as_sets(vi[vi["version_id"].isin(old)], "report_id", ["ingredient", "substance", "role_cod"])}
        got_p = {**{k: s for k, s in _as_sets(rp, "report_id", ["pt_key", "is_indication"]).items() if k in final},
                 **_as_sets(vp[vp["version_id"].isin(old)], "report_id", ["pt_key", "is_indication"])}
        assert got_i == want_i and got_p == want_p, (seed, q)
