"""Plain-python counts over the fixture rows (tests/analyses/fixture.py): sets of report ids, no SQL, no pandas.

Each function restates a table's definition (pipeline/analyses/*.py docstrings) directly."""

from __future__ import annotations

import datetime as dt

FAMILY = "ketamine_family"
SINGLES = ("ketamine", "esketamine", "arketamine", "norketamine")
SUBSTANCES = SINGLES + (FAMILY,)


class Facts:
    def __init__(self, rows: dict, config, roles=("PS", "SS")):
        self.rows, self.config, self.roles = rows, config, set(roles)
        self.pop = {rid for rid, _, ok in rows["reports"] if ok}
        self.usable = {rid for rid, _, _ in rows["reports"]}
        self.attrs = rows["attrs"]
        self.members = {g.name: {" ".join(p.replace("^", "'").split()).lower() for p in g.pts}
                        for g in config.pt_groups}
        # (report, PT display) -> is_indication
        self.pts = {}
        for rid, pt, key, ind in rows["pts"]:
            self.pts[(rid, pt, key)] = ind

    def exposed(self, s, roles=None, reports=None) -> set:
        roles = self.roles if roles is None else set(roles)
        reports = self.pop if reports is None else reports
        out = set()
        for rid, ing, sub, role, _ in self.rows["ingredients"]:
            if rid in reports and role in roles and sub is not None and (s == FAMILY or sub == s):
                out.add(rid)
        return out

    def with_event(self, kind, name, *, non_indication=False) -> set:
        out = set()
        for (rid, pt, key), ind in self.pts.items():
            if non_indication and ind:
                continue
            if (kind == "pt" and pt == name) or (kind == "group" and key in self.members[name]):
                out.add(rid)
        return out


def cells(exposed: set, excluded: set, pop: set, event: set) -> tuple[int, int, int, int]:
    """a, b, c, d with background = pop - excluded."""
    bg = pop - excluded
    a = len(exposed & event)
    c = len(bg & event)
    return a, len(exposed) - a, c, len(bg) - c


def sensitivity(f: Facts, scenario: str, s: str, kind: str, name: str) -> tuple[int, int, int, int]:
    ev = f.with_event(kind, name)
    x = f.exposed(s)
    if scenario == "main":
        return cells(x, x, f.pop, ev)
    if scenario == "ps_only":
        xp = f.exposed(s, roles=("PS",))
        return cells(xp, xp, f.pop, ev)
    if scenario == "sole_suspect":
        suspects = {}
        for rid, ing, sub, role, _ in f.rows["ingredients"]:
            if role in f.roles:
                suspects.setdefault(rid, set()).add((ing, sub))
        if s == FAMILY:
            sole = {r for r in x if all(sub is not None for _, sub in suspects[r])}
        else:
            sole = {r for r in x if len(suspects[r]) == 1 and next(iter(suspects[r]))[1] == s}
        return cells(sole, x, f.pop, ev)
    if scenario == "hcp_only":
        hcp = {r for r in f.pop if f.attrs[r]["occp_cod"] in f.config.analyses.hcp_occupations}
        return cells(x & hcp, x & hcp, hcp, ev)
    if scenario == "duplicates_included":
        xa = f.exposed(s, reports=f.usable)
        return cells(xa, xa, f.usable, ev)
    if scenario == "indication_pts_excluded":
        return cells(x, x, f.pop, f.with_event(kind, name, non_indication=True))
    if scenario == "family_masked":
        z = x if s == FAMILY else x | f.exposed(FAMILY)
        return cells(x, z, f.pop, ev)
    raise ValueError(scenario)


def subgroup_of(f: Facts, by: str, rid: int) -> str:
    a = f.attrs[rid]
    an = f.config.analyses
    if by == "sex":
        return a["sex"]
    if by == "age_band":
        return a["age_band"]
    if by == "reporter":
        o = a["occp_cod"]
        return ("health professional" if o in an.hcp_occupations else "consumer" if o == "CN"
                else "lawyer" if o == "LW" else "unknown")
    c = a["reporter_country"].strip().upper()
    return "US" if c in an.us_countries else "unknown" if c in an.unknown_countries else "non-US"


def subgroup(f: Facts, by: str, sub: str, s: str, group: str):
    pop = {r for r in f.pop if subgroup_of(f, by, r) == sub}
    x = f.exposed(s) & pop
    return cells(x, x, pop, f.with_event("group", group))


def comparator(f: Facts, comp, population: str, kind: str, name: str):
    s_rep = f.exposed(comp.substance)
    c_rep = {rid for rid, ing, sub, role, _ in f.rows["ingredients"]
             if rid in f.pop and role in f.roles and ing in comp.comparator}
    if population == "depression_cohort":
        keys = {p.lower() for p in f.config.analyses.depression_cohort_pts}
        cohort = {rid for rid, _, _, key in f.rows["indis"] if key in keys}
        s_rep, c_rep = s_rep & cohort, c_rep & cohort
    s_only, c_only = s_rep - c_rep, c_rep - s_rep
    ev = f.with_event(kind, name)
    a, c = len(s_only & ev), len(c_only & ev)
    return a, len(s_only) - a, c, len(c_only) - c


def outcomes(f: Facts, s: str, kind: str, name: str) -> dict:
    reps = f.exposed(s) & f.with_event(kind, name)
    codes = {}
    for rid, code in f.rows["outcomes"]:
        codes.setdefault(rid, set()).add(code)
    out = {"a": len(reps)}
    for code, col in (("DE", "death"), ("LT", "life_threatening"), ("HO", "hospitalization"), ("DS", "disability"),
                      ("CA", "congenital_anomaly"), ("RI", "required_intervention"), ("OT", "other_serious")):
        out[col] = sum(1 for r in reps if code in codes.get(r, ()))
    out["serious"] = sum(1 for r in reps if codes.get(r))
    return out


def own_drug_rows(f: Facts, s: str, rid: int) -> list:
    return [d for d in f.rows["drugs"] if d[0] == rid and d[3] in f.roles and (s == FAMILY or d[2] == s)]


def onset_days(f: Facts, s: str, group: str) -> tuple[int, list[int], int]:
    """(a, kept onsets, negatives) of one (substance, group)."""
    reps = f.exposed(s) & f.with_event("group", group)
    kept, neg = [], 0
    for rid in reps:
        e = f.attrs[rid]["event_dt"]
        try:
            ev = dt.date(int(e[:4]), int(e[4:6]), int(e[6:])) if len(e) == 8 else None
        except ValueError:
            ev = None
        seqs = {d[1] for d in own_drug_rows(f, s, rid)}
        starts = [t[3] for t in f.rows["thers"] if t[0] == rid and t[1] in seqs and t[3] is not None]
        if ev is None or not starts:
            continue
        days = (ev - min(starts)).days
        if days < 0:
            neg += 1
        else:
            kept.append(days)
    return len(reps), sorted(kept), neg


def use_category(f: Facts, rid: int) -> str:
    cats = f.config.analyses.use_categories
    keys = {i[3] for i in f.rows["indis"] if i[0] == rid and i[1] in {d[1] for d in own_drug_rows(f, "ketamine", rid)}}
    for name, pts in cats:
        if keys & {p.lower() for p in pts}:
            return name
    return "other/none"


def by_use(f: Facts, stratum_by: str, stratum: str, kind: str, name: str):
    k = f.exposed("ketamine")
    if stratum_by == "indication_category":
        x = {r for r in k if use_category(f, r) == stratum}
    else:
        x = {r for r in k if stratum in {d[4] or "unknown" for d in own_drug_rows(f, "ketamine", r)}}
    return cells(x, k, f.pop, f.with_event(kind, name))
