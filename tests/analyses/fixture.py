"""Curated tables for the analyses: the report tests' hand-made folder plus varied DEMO attributes, comparator
drugs, indications, outcomes, family drug rows with routes and therapy dates. Returns the python-side rows so
every count can be brute-forced (tests/analyses/brute.py), never read back from the implementation."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tests.reports.curated_fixture import make_curated

COMPARATORS = {"VENLAFAXINE": 0.08, "SERTRALINE": 0.05, "LITHIUM": 0.03, "PROPOFOL": 0.06, "MIDAZOLAM": 0.04}
INDICATIONS = ["Depression", "Anaesthesia", "Pain", "Major depression", "Asthma", "Sedation"]
ROUTES = ["Nasal", "Intravenous (not otherwise specified)", None, "Oral"]
OUTC = ["DE", "LT", "HO", "DS", "CA", "RI", "OT"]


def _date(s: str):
    if len(s) == 8 and s.isdigit():
        try:
            return dt.date(int(s[:4]), int(s[4:6]), int(s[6:]))
        except ValueError:
            return None
    return None


def make_analysis_curated(root: Path, *, n_reports: int = 1800, seed: int = 3, synthetic_zip: bool = True) -> dict:
    from pipeline.curate.tables import CURATED

    rows = make_curated(root, n_reports=n_reports, seed=seed, synthetic_zip=synthetic_zip)
    rng = random.Random(seed)
    cur = root / "curated"
    rep = pq.read_table(cur / "reports.parquet").to_pylist()
    attrs = {}
    for r in rep:
        a = {"sex": rng.choice(["F", "F", "M", "UNK"]),
             "age_band": rng.choice(["<18", "18-44", "45-64", "65-74", "75+", "unknown"]),
             "occp_cod": rng.choice(["MD", "PH", "HP", "OT", "CN", "CN", "LW", ""]),
             "reporter_country": rng.choice(["US", "US", "GB", "FR", "", "COUNTRY NOT SPECIFIED", "JP"]),
             "event_dt": rng.choice(["20230315", "20230601", "20240110", "202303", "", "20230230", "20221201"])}
        r.update(a)
        attrs[r["report_id"]] = a
    pq.write_table(pa.Table.from_pylist(rep, schema=CURATED["reports"]), cur / "reports.parquet")
    # comparator drugs (background ingredients) in random roles
    ingredients = list(rows["ingredients"])
    have = {(r[0], r[1]) for r in ingredients}
    for rid, _, _ in rows["reports"]:
        for ing, p in COMPARATORS.items():
            if rng.random() < p and (rid, ing) not in have:
                ingredients.append((rid, ing, None, rng.choice(["PS", "SS", "C"]), "prod_ai"))
    rows["ingredients"] = ingredients
    pq.write_table(pa.Table.from_pydict({
        "report_id": [r[0] for r in ingredients], "ingredient": [r[1] for r in ingredients],
        "substance": [r[2] for r in ingredients], "role_cod": [r[3] for r in ingredients],
        "matched_by": [r[4] for r in ingredients], "is_exposure": [r[3] in ("PS", "SS") for r in ingredients]},
        schema=CURATED["report_ingredients"]), cur / "report_ingredients.parquet")
    # more PTs flagged as indications (the fixture's 2 % is too few to test the scenario)
    pts = [(rid, pt, key, ind or rng.random() < 0.12) for rid, pt, key, ind in rows["pts"]]
    rows["pts"] = pts
    pq.write_table(pa.Table.from_pydict({"report_id": [p[0] for p in pts], "pt": [p[1] for p in pts],
                                         "pt_key": [p[2] for p in pts], "is_indication": [p[3] for p in pts]},
                                        schema=CURATED["report_pts"]), cur / "report_pts.parquet")
    outcomes = sorted({(rid, c) for rid, _, _ in rows["reports"] for c in rng.sample(OUTC, rng.choice([0, 0, 1, 2]))})
    drugs, indis, thers = [], [], []
    for rid, ing, sub, role, _ in ingredients:
        if sub is None:
            continue
        seq = len([d for d in drugs if d[0] == rid]) + 1
        drugs.append((rid, seq, sub, role, rng.choice(ROUTES)))
        for pt in rng.sample(INDICATIONS, rng.choice([0, 1, 1, 2])):
            indis.append((rid, seq, pt, pt.lower()))
        for _ in range(rng.choice([0, 1, 1, 2])):
            s = rng.choice(["20230101", "20230310", "20221115", "202301", "2023", "20230601", "20231301"])
            thers.append((rid, seq, s, _date(s)))
    for rid, _, _ in rows["reports"]:  # indications of other drugs (the comparators' depression cohort)
        if rng.random() < 0.1:
            indis.append((rid, 99, "Depression", "depression"))
    indis = sorted(set(indis))
    thers = sorted(set(thers), key=lambda t: (t[0], t[1], t[2]))

    def write(name, cols, data):
        pq.write_table(pa.Table.from_pydict({c: [d[i] for d in data] for i, c in enumerate(cols)},
                                            schema=CURATED[name]), cur / f"{name}.parquet")

    write("report_outcomes", ["report_id", "outc_cod"], outcomes)
    write("report_substance_drugs", ["report_id", "drug_seq", "substance", "role_cod", "route"], drugs)
    write("report_indications", ["report_id", "drug_seq", "pt", "pt_key"], indis)
    write("report_therapies", ["report_id", "drug_seq", "start_dt", "start_date"], thers)
    rows.update(attrs=attrs, outcomes=outcomes, drugs=drugs, indis=indis, thers=thers)
    return rows
