"""Probabilistic duplicate detection (pipeline/curate/linkage): blocking, term frequencies, missing values, clustering,
review decisions, the real French triple, reruns, and pairwise precision/recall on synthetic duplicate variants."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import math

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import duck
from pipeline.curate import curate, linkage
from pipeline.curate.linkage import blocking, cluster, comparisons, features
from pipeline.errors import PipelineError
from pipeline.layout import DataDir
from pipeline.settings import DEFAULT_CONFIG_PATH, load_config

DRUGS = [f"DRUG{i:02d}" for i in range(30)]
PTS = [f"pt {i:02d}" for i in range(60)]


def _config(tmp_path, replace: dict[str, str] | None = None):
    text = DEFAULT_CONFIG_PATH.read_text()
    for old, new in (replace or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    p = tmp_path / f"config{abs(hash(text)) % 10**6}.toml"
    p.write_text(text)
    return load_config(p)


def _population(n: int = 500, seed: int = 1):
    """Random reports (rep, report_ingredients, report_pts rows) with planted duplicate pairs 0..39 (2k, 2k+1)."""
    rng = np.random.default_rng(seed)
    rep, ing, pts = [], [], []
    drug_p = 1 / np.arange(1, len(DRUGS) + 1)
    drug_p /= drug_p.sum()
    for i in range(n):
        rid = 1000 + i
        day = int(rng.integers(0, 1500))
        rep.append({"report_id": rid, "event_dt": str(np.datetime64("2015-01-01") + day).replace("-", ""),
                    "age_years": float(rng.integers(18, 90)), "sex": "MF"[rng.integers(0, 2)],
                    "reporter_country": ["US", "FR", "DE", "JP", "GB"][rng.integers(0, 5)], "wt_kg": None,
                    "mfr_num": "", "mfr_sndr": ["ACME", "BETA", "GAMMA"][rng.integers(0, 3)],
                    "init_fda_dt": dt.date(2019, 1, 1) + dt.timedelta(days=int(rng.integers(0, 700))),
                    "fda_dt": None})
        for d in set(rng.choice(DRUGS, int(rng.integers(1, 4)), p=drug_p)):
            ing.append({"report_id": rid, "ingredient": str(d), "role_cod": "PS"})
        for p in set(rng.choice(PTS, int(rng.integers(1, 5)))):
            pts.append({"report_id": rid, "pt_key": str(p), "pt": str(p)})
    # planted duplicates: the odd report copies the even one, another sender, a few days later
    for k in range(40):
        a, b = rep[2 * k], rep[2 * k + 1]
        b.update({f: a[f] for f in ("event_dt", "age_years", "sex", "reporter_country")})
        b["init_fda_dt"] = a["init_fda_dt"] + dt.timedelta(days=9)
        ing[:] = [r for r in ing if r["report_id"] != b["report_id"]] + [
            {**r, "report_id": b["report_id"]} for r in ing if r["report_id"] == a["report_id"]]
        pts[:] = [r for r in pts if r["report_id"] != b["report_id"]] + [
            {**r, "report_id": b["report_id"]} for r in pts if r["report_id"] == a["report_id"]]
    return rep, ing, pts


def _connect(rep, ing, pts):
    con = duckdb.connect()
    con.register("_rep", pa.Table.from_pylist(rep, schema=pa.schema([
        ("report_id", pa.int64()), ("event_dt", pa.string()), ("age_years", pa.float64()), ("sex", pa.string()),
        ("reporter_country", pa.string()), ("wt_kg", pa.float64()), ("mfr_num", pa.string()),
        ("mfr_sndr", pa.string()), ("init_fda_dt", pa.date32()), ("fda_dt", pa.date32())])))
    con.register("_ing", pa.Table.from_pylist(ing))
    con.register("_pts", pa.Table.from_pylist(pts))
    for t in ("rep", "ing", "pts"):
        name = {"rep": "rep", "ing": "report_ingredients", "pts": "report_pts"}[t]
        con.execute(f"CREATE TEMP TABLE {name} AS SELECT * FROM _{t}")
    return con


def _policy(**kw):
    return dataclasses.replace(load_config().duplicates.linkage, **kw)


# ---------------------------------------------------------------------------------------------------------------
# blocking
# ---------------------------------------------------------------------------------------------------------------

def test_blocking_pairs_equal_brute_force():
    """Candidate pairs = pairs sharing all fields of at least one key (no NULL field); a block above the cap is
    split by the key's refinement fields, one after the other, and gives no pairs when still above it at its last
    level; checked against a pure-Python enumeration."""
    rep, ing, pts = _population(300)
    rep[5]["sex"] = "UNK"
    rep[7]["event_dt"] = ""
    rep[9]["reporter_country"] = ""
    rep[11]["event_dt"] = rep[11]["event_dt"][:6]  # known to the month only
    # 30 reports of one drug alone, one age, one sex and one year: too many for every level of the age key
    crowd = {1100 + i for i in range(30)}
    for r in rep:
        if r["report_id"] in crowd:
            r.update(age_years=50.0, sex="M", event_dt="2016" + r["event_dt"][4:])
    ing[:] = [r for r in ing if r["report_id"] not in crowd] + [
        {"report_id": rid, "ingredient": "DRUG00", "role_cod": "PS"} for rid in sorted(crowd)]
    con = _connect(rep, ing, pts)
    features.build_records(con)
    cap = 12
    s = blocking.candidate_pairs(con, cap)
    got = {tuple(r) for r in con.execute("SELECT a, b FROM lk_pairs").fetchall()}
    # independent: python keys
    sus = {}
    for r in ing:
        sus.setdefault(r["report_id"], set()).add(r["ingredient"])
    ptset = {}
    for r in pts:
        ptset.setdefault(r["report_id"], set()).add(r["pt_key"])
    recs = {}
    for r in rep:
        ev = r["event_dt"] or None
        recs[r["report_id"]] = {
            "sex": r["sex"] if r["sex"] in ("M", "F") else None, "ev_y": ev[:4] if ev else None,
            "ev_ym": ev[:6] if ev and len(ev) >= 6 else None, "ev_day": ev if ev and len(ev) == 8 else None,
            "sus1": min(sus[r["report_id"]]), "country": r["reporter_country"] or None, "mfr_num": None,
            "sus_h": tuple(sorted(sus[r["report_id"]])), "pts_h": tuple(sorted(ptset[r["report_id"]])),
            "age": round(r["age_years"]), "rcv_y": r["init_fda_dt"].year, "rcv_m": r["init_fda_dt"].month}
    keys = {"suspect_country_year": (("sus1", "country", "ev_y"), ("ev_ym", "ev_day")),
            "mfr_num": (("mfr_num",), ()), "suspects_pts": (("sus_h", "pts_h"), ("ev_y", "ev_ym")),
            "suspects_year": (("sus_h", "ev_y"), ("ev_ym", "ev_day")),
            "suspects_age": (("sus_h", "age"), ("sex", "ev_y")),
            "suspects_sex_country": (("sus_h", "sex", "country"), ("rcv_y", "rcv_m"))}
    assert set(keys) == set(blocking.BLOCKS)

    def split(members, fields, refine, lost, top=False):
        """Pairs of one key among ``members``: blocks on ``fields``, oversized ones split by ``refine``; ``lost``
        collects the reports of an oversized block that no finer level places in a block within the cap (at the
        ``top`` level a report without a key field simply takes no part)."""
        blocks = {}
        for rid in members:
            k = tuple(recs[rid][f] for f in fields)
            if None not in k:
                blocks.setdefault(k, []).append(rid)
            elif not top:
                lost.add(rid)  # in an oversized block, without the refinement field
        out = set()
        for m in blocks.values():
            if len(m) <= cap:
                out |= set(itertools.combinations(sorted(m), 2))
            elif refine:
                out |= split(m, fields + refine[:1], refine[1:], lost)
            else:
                lost.update(m)
        return out

    want, refined_any = set(), False
    for name, (fields, refine) in keys.items():
        lost = set()
        pairs = split(list(recs), fields, refine, lost, top=True)
        want |= pairs
        assert s["pairs_by_block"][name] == len(pairs), name
        assert s["oversized_reports"][name] == len(lost), name
        refined_any |= s["refined_values"][name] > 0
    assert refined_any and sum(s["oversized_reports"].values())  # the cap is small enough to split and to lose
    assert got == want and s["pairs"] == len(want)
    # the planted duplicates are all candidates
    assert all((1000 + 2 * k, 1001 + 2 * k) in got for k in range(40))


def test_set_hashes_tell_a_set_with_the_rarest_member_from_the_set_without_it():
    """DuckDB's list hash skips leading zeros: with a code 0 (the rarest value, here AARARE: one report, first by
    name) {rarest, X} and {X} had one hash."""
    rep, ing, pts = _population(120)
    rare = {"report_id": 1102, "ingredient": "AARARE", "role_cod": "SS"}
    common = sorted({r["ingredient"] for r in ing if r["report_id"] == 1100})
    ing = [r for r in ing if r["report_id"] != 1102] + [
        {"report_id": 1102, "ingredient": d, "role_cod": "PS"} for d in common] + [rare]
    con = _connect(rep, ing, pts)
    features.build_records(con)
    (h50, n50), (h52, n52) = con.execute(
        "SELECT sus_h, sus_n FROM lk_rec WHERE report_id IN (1100, 1102) ORDER BY report_id").fetchall()
    assert (n50, n52) == (len(common), len(common) + 1)
    assert h50 != h52
    assert con.execute("SELECT min(list_min(sus)), min(list_min(pts)) FROM lk_rec").fetchall()[0] == (1, 1)


def test_comparisons_in_tiles_equal_one_statement(monkeypatch):
    """Many pairs are compared in tiles of two record ranges (memory); the tiles together give exactly the table
    of one statement over the pairs' own records (the path of few pairs), every pair once."""
    rep, ing, pts = _population(300)
    con = _connect(rep, ing, pts)
    n_rec = features.build_records(con)
    blocking.candidate_pairs(con, 12)
    n = con.execute("SELECT count(*) FROM lk_pairs").fetchall()[0][0]
    comparisons.compare(con, out="whole")
    # four record ranges: ten tiles
    monkeypatch.setattr(comparisons, "ONE_STATEMENT_PAIRS", 0)
    monkeypatch.setattr(comparisons, "RANGE_BYTES_PER_RECORD", 4 * duck.memory_limit_bytes(con) // n_rec)
    cuts = []
    real_cuts = comparisons._record_cuts
    monkeypatch.setattr(comparisons, "_record_cuts", lambda c, k: cuts.append(real_cuts(c, k)) or cuts[-1])
    comparisons.compare(con, out="tiles")
    assert len(cuts[0]) == 3
    lo, hi = cuts[0][0], cuts[0][-1]
    assert con.execute(f"SELECT count(*) FILTER (a < {lo} AND b >= {hi}), count(*) FILTER (a >= {hi}) "
                       "FROM lk_pairs").fetchall()[0] > (0, 0)  # off-diagonal and last-range tiles hold pairs
    assert n > 100 and con.execute("SELECT count(*) FROM tiles").fetchall()[0][0] == n
    for x, y in (("whole", "tiles"), ("tiles", "whole")):
        assert con.execute(f"SELECT count(*) FROM (SELECT * FROM {x} EXCEPT ALL SELECT * FROM {y})").fetchall() == [(0,)]


def _timing_pair(k: int, e, r) -> list[dict]:
    """Two reports (ids 5000 + 2k, 5001 + 2k) whose event dates agree at event level ``e`` and whose receipt dates
    at received level ``r`` (None: the second report lacks the field)."""
    ev = {None: ("20150601", ""), 0: ("20150601", "20150720"), 1: ("2015", "20150601"), 2: ("201506", "20150615"),
          3: ("20150601", "20150605"), 4: ("20150601", "20150601")}[e]
    gap = {None: None, 0: 400, 1: 100, 2: 10}[r]
    base = dt.date(2016, 1, 1)
    row = {"age_years": None, "sex": None, "reporter_country": None, "wt_kg": None, "mfr_num": "", "mfr_sndr": "",
           "fda_dt": None}
    return [{**row, "report_id": 5000 + 2 * k, "event_dt": ev[0], "init_fda_dt": base},
            {**row, "report_id": 5001 + 2 * k, "event_dt": ev[1],
             "init_fda_dt": None if gap is None else base + dt.timedelta(days=gap)}]


def test_timing_levels_are_the_event_and_receipt_levels_of_every_combination():
    """Event date and receipt date form one comparison: each pair's level is the index of its (event level,
    received level) in ``TIMING``, brute-forced over every combination; both missing is a missing comparison."""
    combos = [(e, r) for e in (None, 0, 1, 2, 3, 4) for r in (None, 0, 1, 2)]
    rep = [row for k, (e, r) in enumerate(combos) for row in _timing_pair(k, e, r)]
    ing = [{"report_id": x["report_id"], "ingredient": "DRUG00", "role_cod": "PS"} for x in rep]
    pts = [{"report_id": x["report_id"], "pt_key": "pt 00", "pt": "pt 00"} for x in rep]
    con = _connect(rep, ing, pts)
    features.build_records(con)
    con.execute("CREATE TEMP TABLE tp AS SELECT 5000 + 2 * k AS a, 5001 + 2 * k AS b FROM range(?) t(k)",
                [len(combos)])
    comparisons.compare(con, "tp", "tc")
    got = dict(con.execute("SELECT (a - 5000) // 2, g_timing FROM tc").fetchall())
    want = {k: None if (e, r) == (None, None) else comparisons.TIMING.index((e, r))
            for k, (e, r) in enumerate(combos)}
    assert got == want
    assert len(comparisons.LEVELS["timing"]) == len(comparisons.TIMING) == 23


def test_joint_timing_u_holds_what_independent_fields_would_miss():
    """Reports are received 10-40 days after their event: among random pairs, "event within 7 days" and "received
    within 30 days" go together far more often than the product of their shares (what two independent comparisons
    assume). The linkage's u for that timing level is the joint share, and its weight is log2(m/u) of it."""
    rng = np.random.default_rng(4)
    rep, ing, pts = _population(600, seed=4)
    for x in rep:
        day = dt.date(2015, 1, 1) + dt.timedelta(days=int(rng.integers(0, 1500)))
        x["event_dt"] = day.strftime("%Y%m%d")
        x["init_fda_dt"] = day + dt.timedelta(days=int(rng.integers(10, 41)))
    con = _connect(rep, ing, pts)
    features.build_records(con)
    blocking.random_pairs(con, 600, "rp")
    comparisons.compare(con, "rp", "rc")
    shares = dict(con.execute("SELECT g_timing, count(*) / sum(count(*)) OVER () FROM rc GROUP BY 1").fetchall())
    lvl = comparisons.TIMING.index((3, 2))
    e3 = sum(v for k, v in shares.items() if comparisons.TIMING[k][0] == 3)
    r2 = sum(v for k, v in shares.items() if comparisons.TIMING[k][1] == 2)
    assert shares[lvl] > 10 * e3 * r2
    con = _connect(rep, ing, pts)
    _, summary = linkage.link(con, _policy(min_reports=0, u_sample_reports=600), np.empty((0, 2), np.int64))
    timing = summary["parameters"]["comparisons"]["timing"]
    assert timing["u"][lvl] == pytest.approx(shares[lvl], rel=0.05)  # the joint share (+0.5 pseudo-pair a level)
    assert timing["weight_bits"][lvl] == pytest.approx(math.log2(timing["m"][lvl] / timing["u"][lvl]))


# ---------------------------------------------------------------------------------------------------------------
# weights: term frequencies, missing values
# ---------------------------------------------------------------------------------------------------------------

def _scored(rep, ing, pts, **kw):
    con = _connect(rep, ing, pts)
    edges, summary = linkage.link(con, _policy(min_reports=0, **kw), np.empty((0, 2), np.int64))
    w = {(a, b): (wt, p) for a, b, wt, p in con.execute("SELECT a, b, w, p FROM lk_scored").fetchall()}
    return w, summary, edges


def test_planted_duplicates_found_and_params_reported():
    rep, ing, pts = _population()
    w, s, edges = _scored(rep, ing, pts)
    found = {tuple(e) for e in edges.tolist()}
    planted = {(1000 + 2 * k, 1001 + 2 * k) for k in range(40)}
    assert planted <= found
    assert len(found - planted) <= 2
    p = s["parameters"]
    assert 0 < p["lambda"] < 1e-2 and set(p["comparisons"]) == set(comparisons.LEVELS)
    for c in p["comparisons"].values():
        assert math.isclose(sum(c["m"]), 1) and math.isclose(sum(c["u"]), 1)
        assert c["weight_bits"] == pytest.approx([math.log2(m / u) for m, u in zip(c["m"], c["u"])])


def test_term_frequency_rare_agreement_weighs_more():
    """Two pairs agreeing on everything; one shares a suspect set only they have, the other the most common set.
    The weights differ by exactly the log2 ratio of the two sets' frequencies (brute-force counted)."""
    rep, ing, pts = _population()
    # pairs (1100, 1101) and (1102, 1103): same fields; suspect set {RARE} vs {DRUG00}
    for a, b in ((1100, 1101), (1102, 1103)):
        ra, rb = rep[a - 1000], rep[b - 1000]
        rb.update({f: ra[f] for f in ("event_dt", "age_years", "sex", "reporter_country", "init_fda_dt")})
        rb["mfr_sndr"] = ra["mfr_sndr"] = "ACME"
    rep[1102 - 1000].update({f: rep[100][f] for f in ("event_dt", "age_years", "sex", "reporter_country",
                                                      "init_fda_dt")})
    rep[1103 - 1000].update({f: rep[100][f] for f in ("event_dt", "age_years", "sex", "reporter_country",
                                                      "init_fda_dt")})
    ing[:] = [r for r in ing if r["report_id"] not in (1100, 1101, 1102, 1103)]
    pts[:] = [r for r in pts if r["report_id"] not in (1100, 1101, 1102, 1103)]
    for rid in (1100, 1101):
        ing.append({"report_id": rid, "ingredient": "RARE", "role_cod": "PS"})
    for rid in (1102, 1103):
        ing.append({"report_id": rid, "ingredient": "DRUG00", "role_cod": "PS"})
    for rid in (1100, 1101, 1102, 1103):
        pts.append({"report_id": rid, "pt_key": "pt only here", "pt": "pt only here"})
    w, s, _ = _scored(rep, ing, pts)
    sets = {}
    for r in ing:
        sets.setdefault(r["report_id"], set()).add(r["ingredient"])
    n = len(sets)
    n_rare = sum(1 for v in sets.values() if v == {"RARE"})
    n_common = sum(1 for v in sets.values() if v == {"DRUG00"})
    assert n_rare == 2 and n_common > 20
    u3 = s["parameters"]["comparisons"]["suspects"]["u"][3]
    adj = lambda k: max(-linkage.TF_CAP_BITS, min(linkage.TF_CAP_BITS, math.log2(u3) - math.log2(k / n)))  # noqa
    assert w[(1100, 1101)][0] - w[(1102, 1103)][0] == pytest.approx(adj(n_rare) - adj(n_common), abs=1e-9)
    assert w[(1100, 1101)][0] > w[(1102, 1103)][0] + 2


def test_missing_value_weighs_nothing():
    """Blanking one report's age removes exactly the age term from the pair's weight: no penalty, no credit."""
    rep, ing, pts = _population()
    w_full, s, _ = _scored(rep, ing, pts)
    rep[1]["age_years"] = None  # planted pair (1000, 1001)
    w_missing, s2, _ = _scored(rep, ing, pts)
    age_same = s["parameters"]["comparisons"]["age"]["weight_bits"][3]
    # parameters barely move with one value blanked; compare with each run's own age weight and prior
    lam = lambda x: math.log2(x["parameters"]["lambda"] / (1 - x["parameters"]["lambda"]))  # noqa: E731
    rest_full = w_full[(1000, 1001)][0] - age_same - lam(s)
    rest_missing = w_missing[(1000, 1001)][0] - lam(s2)
    assert rest_missing == pytest.approx(rest_full, abs=0.05)
    assert w_missing[(1000, 1001)][1] > 0.95


def test_em_fits_u_inside_training_blocks_where_non_matches_agree_more():
    """Training pairs share their block, so unrelated pairs there agree on a correlated field (a drug's company)
    far more often than random pairs do. Expected pattern counts of a known mixture (2 % matches, five binary
    comparisons, the fifth agreeing in 80 % of the block's non-matches against 5 % among random pairs): with u
    fitted in the block EM recovers lambda and m; held at the random-pair u, the match class swallows the
    non-matches and m collapses towards u (what happened at 3 M reports)."""
    from pipeline.curate.linkage import em

    k, n_pairs, lam = 5, 200_000, 0.02
    m_true = [np.array([0.05, 0.95])] * k
    u_block = [np.array([0.9, 0.1])] * (k - 1) + [np.array([0.2, 0.8])]
    u_random = [np.array([0.9, 0.1])] * (k - 1) + [np.array([0.95, 0.05])]
    G, c = [], []
    for g in itertools.product((0, 1), repeat=k):
        pm = math.prod(m_true[j][g[j]] for j in range(k))
        pu = math.prod(u_block[j][g[j]] for j in range(k))
        G.append(g)
        c.append(round(n_pairs * (lam * pm + (1 - lam) * pu)))
    G, c = np.array(G), np.array(c)
    start = [np.array([0.3, 0.7])] * k
    fitted = em.estimate_m(G, c, [2] * k, u_random, [True] * k, start, max_iter=200, fit_u=True)
    assert fitted["converged"] and fitted["lambda"] == pytest.approx(lam, rel=0.01)
    for j in range(k):
        assert fitted["m"][j] == pytest.approx(m_true[j], abs=0.005)
    assert fitted["u"][k - 1] == pytest.approx(u_block[k - 1], abs=0.005)
    held = em.estimate_m(G, c, [2] * k, u_random, [True] * k, start, max_iter=200, fit_u=False)
    assert held["lambda"] > 0.5 and held["m"][0][1] < 0.2


def test_set_levels_equal_list_intersections():
    """The suspect/PT levels (decided by set hash + size, 64-bit signatures, or the lists) equal the levels from
    Jaccard on the plain sets, for every pair of a population, including sets that differ only by the rarest code
    (DuckDB's list hash ignores a leading zero) and sets whose members share signature bits."""
    rep, ing, pts = _population(200)
    rare = {"report_id": 1000, "ingredient": "AAA RAREST", "role_cod": "SS"}  # code 0: the rarest value, first by name
    ing.append(rare)
    ing.extend({**r, "report_id": 1001} for r in ing if r["report_id"] == 1000 and r is not rare)
    con = _connect(rep, ing, pts)
    features.build_records(con)
    con.execute("CREATE TEMP TABLE all_pairs AS SELECT x.report_id AS a, y.report_id AS b FROM lk_rec x JOIN lk_rec y "
                "ON x.report_id < y.report_id")
    comparisons.compare(con, "all_pairs", "all_cmp")
    sets = {}
    for r in ing:
        sets.setdefault(("sus", r["report_id"]), set()).add(r["ingredient"])
    for r in pts:
        sets.setdefault(("pts", r["report_id"]), set()).add(r["pt_key"])

    def level(x, y):
        j = len(x & y) / len(x | y)
        return 0 if not x & y else 1 if j < 0.5 else 2 if j < 1 else 3
    got = con.execute("SELECT a, b, g_suspects, g_pts FROM all_cmp").fetchall()
    assert len(got) == 200 * 199 // 2
    for a, b, gs, gp in got:
        assert gs == level(sets[("sus", a)], sets[("sus", b)]), (a, b)
        assert gp == level(sets[("pts", a)], sets[("pts", b)]), (a, b)
    assert {(a, b): gs for a, b, gs, _ in got}[(1000, 1001)] == 2


def test_below_min_reports_linkage_is_skipped_and_said():
    rep, ing, pts = _population(100)
    con = _connect(rep, ing, pts)
    edges, s = linkage.link(con, _policy(min_reports=1000), np.empty((0, 2), np.int64))
    assert len(edges) == 0 and "100 linkable reports < duplicates.linkage.min_reports 1,000" in s["skipped"]


# ---------------------------------------------------------------------------------------------------------------
# clustering
# ---------------------------------------------------------------------------------------------------------------

def test_clustering_connected_components_and_rule_names():
    e1 = np.array([[5, 3], [3, 9]])
    e2 = np.array([[20, 21], [9, 12]])
    c = cluster.components([("mfr_num", e1), ("linkage", e2), ("relaxed", np.empty((0, 2), np.int64))])
    got = {int(n): (int(g), r) for n, g, r in zip(c["nodes"], c["group"], c["rule"])}
    assert got == {3: (3, "mfr_num+linkage"), 5: (3, "mfr_num+linkage"), 9: (3, "mfr_num+linkage"),
                   12: (3, "mfr_num+linkage"), 20: (20, "linkage"), 21: (20, "linkage")}
    # edge order and orientation do not matter
    c2 = cluster.components([("mfr_num", e1[::-1, ::-1]), ("linkage", e2[::-1])])
    assert [int(x) for x in c2["group"]] == [int(x) for x in c["group"]] and c2["rule"] == c["rule"]


# ---------------------------------------------------------------------------------------------------------------
# curation: synthetic background + the real French triple; reruns; review decisions
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def background(tmp_path_factory):
    """Two synthetic quarters with duplicate variants (fetch -> ingest), plus the five real 2020Q3 ketamine cases."""
    from pipeline.ingest import ingest
    from pipeline.quarters import parse_range
    from pipeline.sources import fetch
    from pipeline.synthetic import write_mirror
    from tests.test_curate import _fixture_rows, write_raw

    root = tmp_path_factory.mktemp("linkage")
    mirror = root / "mirror"
    write_mirror(mirror, parse_range("2020Q1:2020Q2"), reports_per_quarter=1500, seed=5, progress=False,
                 duplicate_variants=True)
    dd = DataDir.of(root / "data")
    fetch(str(mirror), dd, progress=False)
    ingest(dd, progress=False, validate=False)
    for table in ("DEMO", "DRUG", "REAC", "OUTC"):
        write_raw(dd, table, "2020Q3", _fixture_rows(table))
    return root, dd, json.loads((mirror / "truth.json").read_text())


def _reports(dd) -> dict[int, dict]:
    return {r["report_id"]: r for r in pq.read_table(dd.curated / "reports.parquet").to_pylist()}


TRIPLE = [10345809, 10351026, 10358135]


def test_french_triple_is_one_group_by_linkage_alone(background, tmp_path):
    root, dd, _ = background
    s = curate(dd, _config(tmp_path, {"relaxed = true": "relaxed = false"}), progress=False, force=True)
    assert "skipped" not in s["duplicates"]["linkage"]
    rep = _reports(dd)
    gid = {rep[c]["dup_group_id"] for c in TRIPLE}
    assert gid == {10345809}
    assert all(rep[c]["dup_rule"] == "linkage" and rep[c]["dup_score"] >= 0.95 for c in TRIPLE)
    assert sorted(r for r, v in rep.items() if v["dup_group_id"] == 10345809) == TRIPLE
    assert [rep[c]["is_dup_kept"] for c in TRIPLE] == [False, False, True]
    assert rep[10020660]["dup_group_id"] is None and rep[10168240]["dup_group_id"] is None


def test_default_config_groups_triple_with_rules_and_linkage_and_rerun_is_identical(background):
    root, dd, _ = background
    cfg = load_config()
    curate(dd, cfg, progress=False, force=True)
    first = pq.read_table(dd.curated / "reports.parquet",
                          columns=["report_id", "dup_group_id", "dup_rule", "dup_score", "is_dup_kept"])
    rep = _reports(dd)
    assert sorted(r for r, v in rep.items() if v["dup_group_id"] == 10345809) == TRIPLE
    assert {rep[c]["dup_rule"] for c in TRIPLE} == {"relaxed+linkage"}
    params = json.loads((dd.curated / "linkage_params.json").read_text())
    manifest = json.loads((dd.curated / "manifest.json").read_text())
    assert manifest["summary"]["duplicates"]["linkage"]["parameters"] == params["parameters"]
    funnel = {r["name"]: r for r in pq.read_table(dd.curated / "funnel.parquet").to_pylist()}
    rules, lk = funnel["duplicate-flag exclusions"], funnel["linkage duplicate exclusions"]
    assert rules["reports_out"] == lk["reports_in"] and lk["reports_out"] < lk["reports_in"]
    assert lk["reports_out"] == sum(v["in_analysis"] for v in rep.values())
    curate(dd, cfg, progress=False, force=True)
    assert pq.read_table(dd.curated / "reports.parquet",
                         columns=["report_id", "dup_group_id", "dup_rule", "dup_score", "is_dup_kept"]).equals(first)


def test_review_decisions_link_and_unlink(background, tmp_path):
    root, dd, _ = background
    review = pq.read_table(DataDir.of(dd.root).curated / "dup_review.parquet").to_pylist()
    assert review, "borderline pairs are listed"
    assert all(abs(r["match_probability"] - 0.5) <= 0.5 for r in review)
    decisions = tmp_path / "review.csv"
    decisions.write_text("report_id_a,report_id_b,decision\n10020660,10168240,same\n"
                         f"{TRIPLE[0]},{TRIPLE[1]},different\n{TRIPLE[1]},{TRIPLE[2]},different\n"
                         f"{TRIPLE[0]},{TRIPLE[2]},different\n")
    cfg = _config(tmp_path, {'review_file = ""': f'review_file = "{decisions}"'})
    s = curate(dd, cfg, progress=False, force=True)
    rep = _reports(dd)
    assert rep[10020660]["dup_group_id"] == rep[10168240]["dup_group_id"] == 10020660
    assert rep[10020660]["dup_rule"] == "review"
    assert all(rep[c]["dup_group_id"] is None for c in TRIPLE)
    assert s["duplicates"]["review_decisions"] == {"same": 1, "different": 3}
    decisions.write_text("report_id_a,report_id_b,decision\n1,2,maybe\n")
    with pytest.raises(PipelineError, match="line 2: decision must be 'same' or 'different'"):
        curate(dd, cfg, progress=False, force=True)


def test_linkage_can_flag_without_excluding(background, tmp_path):
    root, dd, _ = background
    cfg = _config(tmp_path, {"exclude_flagged = true": "exclude_flagged = false", "relaxed = true": "relaxed = false"})
    curate(dd, cfg, progress=False, force=True)
    rep = _reports(dd)
    assert {rep[c]["dup_group_id"] for c in TRIPLE} == {10345809}
    assert all(rep[c]["is_dup_kept"] and rep[c]["in_analysis"] for c in TRIPLE)


# ---------------------------------------------------------------------------------------------------------------
# evaluation on synthetic duplicate variants
# ---------------------------------------------------------------------------------------------------------------

def test_pairwise_precision_recall_rules_vs_linkage(tmp_path, capsys):
    """The generator knows every group of one patient; pairwise precision/recall of the rules alone and of
    rules + linkage (the bench runs the same on 6 quarters x 4,000 reports and three seeds)."""
    from bench.bench_linkage import evaluate, pairs_of, pairwise

    assert pairwise([[1, 2, 3]], [[1, 2], [3, 4]]) == {"true_pairs": 2, "found_pairs": 3, "tp": 1,
                                                       "precision": 0.3333, "recall": 0.5}
    assert pairs_of([[3, 1, 2]]) == {(1, 2), (1, 3), (2, 3)}
    r = evaluate(11, "2019Q1:2019Q4", 2500, tmp_path / "eval")
    with capsys.disabled():
        print(f"\n[linkage evaluation, seed 11, 4 quarters x 2,500] rules P/R {r['rules']['precision']}/"
              f"{r['rules']['recall']}; linkage P/R {r['linkage']['precision']}/{r['linkage']['recall']} "
              f"({r['rules']['true_pairs']} true pairs)")
    assert r["rules"]["recall"] < 0.5
    assert r["linkage"]["precision"] >= 0.99 and r["linkage"]["recall"] >= 0.9
    # the history bench's scoring (Arrow filters, 22 M reports at full scale) = plain Python over the same table
    from bench.bench_history import _duplicate_scores

    dd = DataDir.of(tmp_path / "eval" / "data")
    truth = json.loads((tmp_path / "eval" / "mirror" / "truth.json").read_text())["cases"]["patient_groups"]
    rows = pq.read_table(dd.curated / "reports.parquet").to_pylist()
    ids = {x["report_id"] for x in rows if x["has_drug"] and x["has_pt"]}
    found = {}
    for x in rows:
        if x["report_id"] in ids and x["dup_group_id"] is not None:
            found.setdefault(x["dup_group_id"], []).append(x["report_id"])
    want = pairwise(list(found.values()), [[x for x in g if x in ids] for g in truth])
    assert _duplicate_scores(dd, truth) == want
    assert want["found_pairs"] == r["linkage"]["found_pairs"]


# ---------------------------------------------------------------------------------------------------------------
# report section
# ---------------------------------------------------------------------------------------------------------------

def test_review_section_shows_pairs_side_by_side_escaped(background):
    import pandas as pd

    from pipeline.curate.linkage.review import REVIEW
    from pipeline.reports.dup_review_section import read_review, section_html

    root, dd, _ = background
    curate(dd, load_config(), progress=False, force=True)
    review = read_review(dd.curated)
    assert list(review.columns) == [f.name for f in REVIEW] and len(review)
    html = section_html(review)
    first = review.iloc[0]
    assert f"reports {first['report_id_a']} and {first['report_id_b']}" in html
    assert html.count("<caption>") == min(len(review), 30)
    evil = review.head(1).copy()
    evil["pts_a"] = "<script>alert(1)</script>"
    out = section_html(evil)
    assert "<script>" not in out and "&lt;script&gt;alert(1)&lt;/script&gt;" in out
    assert "None" in section_html(pd.DataFrame(columns=[f.name for f in REVIEW]))
    assert "Not available" in section_html(None)
