"""curate -> report_outcomes, report_substance_drugs, report_indications, report_therapies: the kept version's rows
only, brute-forced from the raw rows written here (random cases, two versions each)."""

from __future__ import annotations

import datetime as dt
import random

import pyarrow.parquet as pq

from pipeline.settings import load_config
from tests.test_curate import Raw, run

FAMILY = {"KETAMINE": "ketamine", "SPRAVATO": "esketamine", "ESKETAMINE": "esketamine"}
EXTRAS = {"report_outcomes", "report_substance_drugs", "report_indications", "report_therapies"}
OUTC = ["DE", "LT", "HO", "DS", "CA", "RI", "OT"]
ROUTES = ["Nasal", "Intravenous (not otherwise specified)", "", "Oral", " Intramuscular "]
STARTS = ["20230105", "202301", "2023", "", "20230230", "20221231", "2023010"]


def _random_raw(seed: int):
    rng = random.Random(seed)
    raw, kept = Raw(), {}
    for i in range(60):
        caseid = 5000 + i
        for version in (1, 2):
            q = "2023Q1" if version == 1 else "2023Q2"
            drugs = [(rng.choice(["PS", "SS", "C"]), n, n if n != "SPRAVATO" else "ESKETAMINE")
                     for n in rng.sample(["KETAMINE", "SPRAVATO", "PROPOFOL", "VENLAFAXINE", "ASPIRIN"],
                                         rng.randint(1, 3))]
            indis = [(rng.randint(1, len(drugs)), rng.choice(["Depression", "Anaesthesia", " pain ", "Pain"]))
                     for _ in range(rng.randint(0, 3))]
            pid = raw.case(q, caseid, version, drugs=drugs, indis=indis, pts=("Nausea",),
                           event_dt=rng.choice(["20230110", "2023", ""]))
            outc = rng.sample(OUTC, rng.randint(0, 3))
            for code in outc:
                raw.add(q, "OUTC", {"primaryid": pid, "caseid": str(caseid), "outc_cod": f" {code.lower()} "})
            routes = {}
            for seq, (role, name, ai) in enumerate(drugs, 1):
                routes[seq] = rng.choice(ROUTES)
            # the route lives on the DRUG row: rewrite the rows just added
            for row in raw.rows[(q, "DRUG")]:
                if row["primaryid"] == pid:
                    row["route"] = routes[int(row["drug_seq"])]
            ther = []
            for seq in range(1, len(drugs) + 1):
                for _ in range(rng.randint(0, 2)):
                    s = rng.choice(STARTS)
                    raw.add(q, "THER", {"primaryid": pid, "caseid": str(caseid), "dsg_drug_seq": str(seq),
                                        "start_dt": s})
                    ther.append((seq, s))
            kept[caseid] = {"drugs": drugs, "indis": indis, "outc": outc, "routes": routes, "ther": ther}
    return raw, kept  # version 2 (the later quarter, higher caseversion) is kept for every case


def _date(s):
    s = s.strip()
    if len(s) != 8 or not s.isdigit():
        return None
    try:
        return dt.date(int(s[:4]), int(s[4:6]), int(s[6:]))
    except ValueError:
        return None


def test_extras_follow_the_kept_version(tmp_path):
    raw, kept = _random_raw(11)
    dd, summary = run(tmp_path, raw, load_config())

    def rows(name):
        return pq.read_table(dd.curated / f"{name}.parquet").to_pylist()

    want_outc = {(c, code) for c, k in kept.items() for code in k["outc"]}
    assert {(r["report_id"], r["outc_cod"]) for r in rows("report_outcomes")} == want_outc
    want_drugs = set()
    for c, k in kept.items():
        for seq, (role, name, _) in enumerate(k["drugs"], 1):
            if name in FAMILY:
                route = " ".join(k["routes"][seq].split()) or None
                want_drugs.add((c, seq, FAMILY[name], role, route))
    got = {(r["report_id"], r["drug_seq"], r["substance"], r["role_cod"], r["route"])
           for r in rows("report_substance_drugs")}
    assert got == want_drugs
    want_indi = {(c, seq, pt.strip(), pt.strip().lower()) for c, k in kept.items() for seq, pt in k["indis"]}
    assert {(r["report_id"], r["drug_seq"], r["pt"], r["pt_key"]) for r in rows("report_indications")} == want_indi
    fam_seq = {(c, seq) for c, seq, *_ in want_drugs}
    want_ther = {(c, seq, s.strip(), _date(s)) for c, k in kept.items() for seq, s in k["ther"]
                 if (c, seq) in fam_seq}
    got_ther = {(r["report_id"], r["drug_seq"], r["start_dt"], r["start_date"]) for r in rows("report_therapies")}
    assert got_ther == want_ther
    assert summary["rows"]["report_outcomes"] == len(want_outc)


def test_curated_suites_pass_on_extras(tmp_path):
    from pipeline import quality

    raw, _ = _random_raw(5)
    dd, _ = run(tmp_path, raw, load_config())
    res = quality.validate_curated(dd, data_docs=False, raise_on_critical=False)
    names = {c["table"] for c in res["checks"]}
    assert {"report_outcomes", "report_substance_drugs", "report_indications", "report_therapies"} <= names
    extra = [c for c in res["checks"] if c["table"] in EXTRAS]
    assert not [c for c in extra if not c["success"] and c["severity"] == "critical"]
    # the fixture's 7-digit start date is the one malformed FAERS date (blank is allowed): a warning, not an error
    warned = [c for c in extra if not c["success"]]
    assert [c["table"] for c in warned] == ["report_therapies"]


def test_an_extras_table_without_report_id_is_a_failed_check_not_a_crash(tmp_path):
    import pyarrow.parquet as pq

    from pipeline import quality

    raw, _ = _random_raw(5)
    dd, _ = run(tmp_path, raw, load_config())
    path = dd.curated / "report_outcomes.parquet"
    pq.write_table(pq.read_table(path).drop_columns(["report_id"]), path)
    res = quality.validate_curated(dd, data_docs=False, raise_on_critical=False)
    failed = [c for c in res["checks"] if c["table"] == "report_outcomes" and not c["success"]]
    assert failed and {c["severity"] for c in failed} == {"critical"}
    assert any("report_id" in (c.get("columns") or []) or "report_id" in str(c.get("details", "")) for c in failed)
