"""Small hand-made curated tables (docs/CONTRACTS.md, "Curated tables") with a known injected effect.

Written straight to ``DIR/curated/`` so the report layer can be tested without ingest/curate. Every number a test
checks is recomputed from these rows by brute force (:func:`brute_counts`), never hard-coded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

QUARTERS = ["2023Q1", "2023Q2", "2023Q3", "2023Q4", "2024Q1", "2024Q2", "2024Q3", "2024Q4"]
FAMILY_ING = {"KETAMINE": "ketamine", "ESKETAMINE": "esketamine", "NORKETAMINE": "norketamine"}
BACKGROUND_DRUGS = [f"DRUG{i:02d}" for i in range(1, 26)]
GROUP_PTS = ["Dissociation", "Derealisation", "Tachycardia", "Heart rate increased", "Hypertension",
             "Blood pressure increased", "Sedation", "Somnolence", "Dizziness", "Suicidal ideation"]
OTHER_PTS = [f"Reaction {c}" for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"] + ["Nausea", "Headache", "Fatigue"]
ALL_PTS = GROUP_PTS + OTHER_PTS


def _schemas():
    from pipeline.curate.tables import CURATED

    return CURATED


def make_curated(root: Path, *, n_reports: int = 2500, seed: int = 7, synthetic_zip: bool = False) -> dict:
    """Write DIR/curated/*.parquet + manifest.json under ``root``; return the python-side rows for brute force."""
    rng = np.random.default_rng(seed)
    schemas = _schemas()
    cur = root / "curated"
    cur.mkdir(parents=True, exist_ok=True)
    reports, ingredients, pts = [], [], []
    # per-drug PT propensities give over-dispersion (so MGPS has something to fit)
    drug_pt_boost = {d: rng.choice(len(ALL_PTS), size=3, replace=False) for d in BACKGROUND_DRUGS}
    for i in range(n_reports):
        rid = 100000 + i
        q = QUARTERS[min(len(QUARTERS) - 1, int(rng.integers(0, len(QUARTERS))))]
        in_analysis = bool(rng.random() > 0.04)
        drugs = {}
        for d in rng.choice(BACKGROUND_DRUGS, size=int(rng.integers(1, 4)), replace=False):
            drugs[(str(d), None)] = str(rng.choice(["PS", "SS", "C"], p=[0.5, 0.2, 0.3]))
        fam = None
        u = rng.random()
        if u < 0.06:
            fam = "ESKETAMINE"
        elif u < 0.10:
            fam = "KETAMINE"
        elif u < 0.11:
            fam = "NORKETAMINE"
        if fam:
            role = str(rng.choice(["PS", "SS", "C"], p=[0.6, 0.25, 0.15]))
            drugs[(fam, FAMILY_ING[fam])] = role
        rows = [(rid, ing, sub, role, "prod_ai" if sub else "drugname") for (ing, sub), role in drugs.items()]
        if fam and rng.random() < 0.3:  # same ingredient again in another role: counted once
            other = "C" if drugs[(fam, FAMILY_ING[fam])] != "C" else "PS"
            rows.append((rid, fam, FAMILY_ING[fam], other, "brand"))
        ingredients += rows
        k = int(rng.integers(1, 5))
        p = np.ones(len(ALL_PTS))
        for (ing, sub), role in drugs.items():
            if sub is None:
                p[drug_pt_boost[ing]] += 6.0
        p /= p.sum()
        chosen = set(int(x) for x in rng.choice(len(ALL_PTS), size=k, replace=False, p=p))
        if fam == "ESKETAMINE" and drugs[(fam, "esketamine")] in ("PS", "SS") and rng.random() < 0.45:
            chosen.add(ALL_PTS.index(str(rng.choice(["Dissociation", "Derealisation"]))))
        if fam == "KETAMINE" and rng.random() < 0.3:
            chosen.add(ALL_PTS.index("Blood pressure increased"))
        for j in chosen:
            pts.append((rid, ALL_PTS[j], ALL_PTS[j].lower(), bool(rng.random() < 0.02)))
        reports.append((rid, q, in_analysis))

    def tbl(name, cols):
        return pa.Table.from_pydict(cols, schema=schemas[name])

    n = len(reports)
    rep = tbl("reports", {
        "report_id": [r[0] for r in reports], "primaryid": [r[0] * 10 + 1 for r in reports],
        "caseversion": [1] * n, "quarter": [r[1] for r in reports], "era": ["faers_b"] * n,
        "fda_dt": [None] * n, "init_fda_dt": [None] * n, "event_dt": [""] * n, "age_years": [40.0] * n,
        "age_band": ["18-44"] * n, "sex": ["F"] * n, "reporter_country": ["US"] * n, "occp_cod": ["MD"] * n,
        "receipt_year": [int(r[1][:4]) for r in reports], "has_drug": [True] * n, "has_pt": [True] * n,
        "dup_group_id": [None] * n, "dup_rule": [None] * n, "dup_score": [None] * n, "is_dup_kept": [r[2] for r in reports],
        "in_analysis": [r[2] for r in reports], "first_quarter": [r[1] for r in reports]})
    ing = tbl("report_ingredients", {
        "report_id": [r[0] for r in ingredients], "ingredient": [r[1] for r in ingredients],
        "substance": [r[2] for r in ingredients], "role_cod": [r[3] for r in ingredients],
        "matched_by": [r[4] for r in ingredients], "is_exposure": [r[3] in ("PS", "SS") for r in ingredients]})
    rpt = tbl("report_pts", {"report_id": [r[0] for r in pts], "pt": [r[1] for r in pts],
                             "pt_key": [r[2] for r in pts], "is_indication": [r[3] for r in pts]})
    n_an = sum(r[2] for r in reports)
    funnel = tbl("funnel", {"step": [1, 2, 3], "name": ["raw DEMO rows", "duplicate-flag exclusions",
                                                         "analysis population"],
                            "reports_in": [n + 40, n, n_an], "reports_out": [n, n_an, n_an],
                            "reason": ["every DEMO row", "cross-case duplicates", "reports.in_analysis"]})
    unm = tbl("unmapped_drugs", {"drugname": ["MYSTERY TABS", "HERBAL <TEA> & CO"], "n_rows": [12, 3],
                                 "n_reports": [10, 3]})
    r0 = reports[0][0]
    conflicts = tbl("name_conflicts", {
        "report_id": [r0, r0], "primaryid": [r0 * 10 + 1] * 2, "quarter": [reports[0][1]] * 2, "drug_seq": [1, 2],
        "role_cod": ["PS", "C"], "drugname": ["SPRAVATO <NASAL>", "KETAMINE"], "prod_ai": ["KETAMINE", "MIDAZOLAM"],
        "substance_from_drugname": ["esketamine", "ketamine"], "substance_from_prod_ai": ["ketamine", None],
        "chosen": ["esketamine", None], "chosen_from": ["drugname", None],
        "reason": ["drugname (esketamine) is more specific than prod_ai (ketamine)", "prod_ai kept"]})
    for name, t in [("reports", rep), ("report_ingredients", ing), ("report_pts", rpt), ("funnel", funnel),
                    ("unmapped_drugs", unm), ("name_conflicts", conflicts)]:
        pq.write_table(t, cur / f"{name}.parquet", compression="zstd")
    inputs = [{"quarter": q, "era": "faers_b", "zip": f"faers_ascii_{q.lower()}.zip",
               "zip_sha256": hashlib.sha256(q.encode()).hexdigest(), "ingest_record_sha256": None}
              for q in QUARTERS]
    (cur / "manifest.json").write_text(json.dumps({"created_at": "2026-01-01T00:00:00+00:00", "inputs": inputs,
                                                   "fingerprint": f"fixture-{seed}-{n_reports}"}))
    if synthetic_zip:
        import zipfile

        (root / "landing").mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(root / "landing" / inputs[0]["zip"], "w") as zf:
            zf.writestr("README.txt", "SYNTHETIC DATA - NOT FDA FAERS DATA.\r\n")
    return {"reports": reports, "ingredients": ingredients, "pts": pts}


def brute_counts(rows: dict, groups: dict[str, list[str]], *, roles=("PS", "SS"), cutoff: str | None = None,
                 substances=("ketamine", "esketamine", "arketamine", "norketamine", "ketamine_family"),
                 from_quarter: str | None = None):
    """Plain-python report-level counts: {(substance, ('pt', PT) | ('group', g)): (a, n_drug, n_event, n_total)}.

    ``cutoff``: reports of quarters <= it; ``from_quarter``: reports first received (here: their quarter) >= it."""
    pop = {rid for rid, q, ok in rows["reports"]
           if ok and (cutoff is None or q <= cutoff) and (from_quarter is None or q >= from_quarter)}
    exposed: dict[str, set] = {s: set() for s in substances}
    for rid, ing, sub, role, _ in rows["ingredients"]:
        if rid in pop and role in roles and sub is not None:
            if sub in exposed:
                exposed[sub].add(rid)
            if "ketamine_family" in exposed:
                exposed["ketamine_family"].add(rid)
    ev: dict[tuple, set] = {}
    for rid, pt, key, _ in rows["pts"]:
        if rid in pop:
            ev.setdefault(("pt", pt), set()).add(rid)
            for g, members in groups.items():
                if key in {m.lower() for m in members}:
                    ev.setdefault(("group", g), set()).add(rid)
    for g in groups:
        ev.setdefault(("group", g), set())
    out = {}
    for s, ex in exposed.items():
        for e, reps in ev.items():
            out[(s, e)] = (len(ex & reps), len(ex), len(reps), len(pop))
    return out
