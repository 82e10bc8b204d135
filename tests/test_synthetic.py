"""Tests of the synthetic FAERS mirror (``pipeline sample``): layout, exact headers, quirks and truth.json.

The truth is re-derived here by an independent plain-Python mini pipeline over the written files (split on
``$``; the curation rules of docs/dedup-policy.md; substance matching), so a generator
whose files and truth disagree fails.
"""

from __future__ import annotations

import json
import re
import time
import zipfile
from collections import defaultdict
from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.quarters import Quarter, parse_range
from pipeline.synthetic import write_mirror

N = 1500
QUARTERS = "2012Q2:2013Q1,2017Q4,2018Q1,2019Q1:2019Q2,2021Q4,2024Q4"

# real FDA files end every line, header included, with '$'
H_B = {
    "DEMO": "primaryid$caseid$caseversion$i_f_code$event_dt$mfr_dt$init_fda_dt$fda_dt$rept_cod$auth_num$mfr_num$"
            "mfr_sndr$lit_ref$age$age_cod$age_grp$sex$e_sub$wt$wt_cod$rept_dt$to_mfr$occp_cod$reporter_country$"
            "occr_country",
    "DRUG": "primaryid$caseid$drug_seq$role_cod$drugname$prod_ai$val_vbm$route$dose_vbm$cum_dose_chr$"
            "cum_dose_unit$dechal$rechal$lot_num$exp_dt$nda_num$dose_amt$dose_unit$dose_form$dose_freq",
    "REAC": "primaryid$caseid$pt$drug_rec_act",
    "OUTC": "primaryid$caseid$outc_cod",
    "RPSR": "primaryid$caseid$rpsr_cod",
    "THER": "primaryid$caseid$dsg_drug_seq$start_dt$end_dt$dur$dur_cod",
    "INDI": "primaryid$caseid$indi_drug_seq$indi_pt",
}
H_A12 = {
    **H_B,
    "DEMO": "primaryid$caseid$caseversion$i_f_code$event_dt$mfr_dt$init_fda_dt$fda_dt$rept_cod$mfr_num$mfr_sndr$"
            "age$age_cod$gndr_cod$e_sub$wt$wt_cod$ rept_dt$to_mfr$occp_cod$reporter_country$occr_country",
    "DRUG": "primaryid$caseid$drug_seq$role_cod$drugname$val_vbm$route$dose_vbm$cum_dose_chr$cum_dose_unit$"
            "dechal$rechal$lot_nbr$exp_dt$nda_num$dose_amt$dose_unit$dose_form$dose_freq",
    "REAC": "primaryid$caseid$pt",
    "OUTC": "primaryid$caseid$outc_code",
}
H_A13 = {**H_A12, "DEMO": H_A12["DEMO"].replace("$ rept_dt", "$rept_dt"),
         "DRUG": H_A12["DRUG"].replace("lot_nbr", "lot_num"), "OUTC": "primaryid$caseid$outc_cod"}
H_L = {
    "DEMO": "ISR$CASE$I_F_COD$FOLL_SEQ$IMAGE$EVENT_DT$MFR_DT$FDA_DT$REPT_COD$MFR_NUM$MFR_SNDR$AGE$AGE_COD$"
            "GNDR_COD$E_SUB$WT$WT_COD$REPT_DT$OCCP_COD$DEATH_DT$TO_MFR$CONFID$REPORTER_COUNTRY",
    "DRUG": "ISR$DRUG_SEQ$ROLE_COD$DRUGNAME$VAL_VBM$ROUTE$DOSE_VBM$DECHAL$RECHAL$LOT_NUM$EXP_DT$NDA_NUM",
    "REAC": "ISR$PT", "OUTC": "ISR$OUTC_COD", "RPSR": "ISR$RPSR_COD",
    "THER": "ISR$DRUG_SEQ$START_DT$END_DT$DUR$DUR_COD", "INDI": "ISR$DRUG_SEQ$INDI_PT",
}
ALIASES = {"isr": "primaryid", "case": "caseid", "foll_seq": "caseversion", "i_f_cod": "i_f_code",
           "gndr_cod": "sex", "lot_nbr": "lot_num", "outc_code": "outc_cod"}


def expected_headers(q: Quarter) -> dict[str, str]:
    if q.era == "laers":
        return H_L
    if q == Quarter(2012, 4):
        return H_A12
    return H_A13 if q.era == "faers_a" else H_B


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mirror")
    t0 = time.perf_counter()
    summary = write_mirror(out, parse_range(QUARTERS), reports_per_quarter=N, seed=7, progress=False,
                           demo_duplicates=0.002)
    assert time.perf_counter() - t0 < 20, "a small multi-era mirror must build fast"
    assert summary["quarters"] == [str(q) for q in parse_range(QUARTERS)]
    return out


@pytest.fixture(scope="module")
def truth(mirror) -> dict:
    return json.loads((mirror / "truth.json").read_text())


def read_lines(data: bytes) -> list[bytes]:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]


def parse_table(data: bytes, table: str, malformed: set[int], trailing_dollar: bool = False) -> list[dict]:
    lines = read_lines(data)
    names = [c.strip().lower() for c in lines[0].decode().split("$")]
    names = [ALIASES.get(n, n) for n in names]
    rows = []
    for i, raw in enumerate(lines[1:], start=2):
        text = raw.decode("utf-8", errors="replace")
        fields = text.split("$")
        if trailing_dollar and len(fields) == len(names) + 1 and fields[-1] == "":
            fields.pop()  # LAERS data rows end in one extra '$'
        if len(fields) != len(names):
            assert i in malformed, f"{table} line {i}: {len(fields)} fields, header {len(names)}"
            continue
        assert i not in malformed, f"{table} line {i} listed as malformed but parses"
        rows.append(dict(zip(names, fields)))
    return rows


# --------------------------------------------------------------------------------------------
# layout, names, headers, quirks
# --------------------------------------------------------------------------------------------
def test_truth_header(truth):
    assert truth["synthetic"] is True and truth["generator"] == "pipeline.synthetic"
    assert truth["seed"] == 7 and truth["reports_per_quarter"] == N
    assert truth["pt_groups"]["dissociation"][0] == "Dissociation"
    assert set(truth["substances"]) == {"ketamine", "esketamine", "arketamine", "norketamine", "ketamine_family"}


def test_zip_names_and_members(mirror, truth):
    zips = truth["zips"]
    assert zips["2012Q3"] == "aers_ascii_2012q3.zip"
    assert zips["2019Q1"] == "faers_ascii_2019Q1.zip" and zips["2012Q4"].startswith("faers_ascii_2012")
    assert {z[-6] for z in zips.values() if z.startswith("faers")} == {"q", "Q"}, "FDA mixes q/Q in names"
    for q, name in zips.items():
        assert (mirror / name).is_file()
        names = zipfile.ZipFile(mirror / name).namelist()
        assert "README.txt" in names and b"SYNTHETIC" in zipfile.ZipFile(mirror / name).read("README.txt")
        assert set(truth["files"][q]) >= {"DEMO", "DRUG", "REAC", "OUTC", "RPSR", "THER", "INDI"}
        for table, f in truth["files"][q].items():
            assert f["member"] in names, (q, table)
    f = truth["files"]
    assert f["2012Q3"]["DEMO"]["member"] == "ascii/DEMO12Q3.TXT"
    assert f["2012Q4"]["DRUG"]["member"] == "ascii/drug12q4.txt"
    assert f["2013Q1"]["REAC"]["member"] == "ascii/REAC13Q1.txt"
    assert f["2018Q1"]["DEMO"]["member"].endswith("DEMO18Q1_new.txt")
    assert f["2024Q4"]["DEMO"]["member"] == "ASCII/DEMO24Q4.txt"
    assert f["2019Q1"]["DELETED"]["member"] == "deleted/ADR19Q1DeletedCases.txt"
    assert f["2019Q1"]["DELETED_ALL"]["member"].endswith("AllDeletedCases.txt")
    assert f["2019Q2"]["DELETED"]["member"] == "deleted/ADR19Q2DeletedCases.txt"
    assert f["2021Q4"]["DELETED"]["member"] == "Deleted/DELETE21Q4.txt"
    assert "DELETED" not in f["2018Q1"] and "DELETED_ALL" not in f["2019Q2"]
    stat = zipfile.ZipFile(mirror / truth["zips"]["2013Q1"]).namelist()
    assert "ascii/STAT13Q1.TXT" in stat and "ascii/ASC_NTS.pdf" in stat


def test_headers_exact_per_era(mirror, truth):
    for qs, files in truth["files"].items():
        q = Quarter.parse(qs)
        z = zipfile.ZipFile(mirror / truth["zips"][qs])
        exp = expected_headers(q)
        for table in exp:
            data = z.read(files[table]["member"])
            eol = b"\n" if q == Quarter(2017, 4) else b"\r\n"
            first = data.split(b"\n", 1)[0] + b"\n"
            bom = data.startswith(b"\xef\xbb\xbf")
            assert bom == files[table]["bom"], (qs, table)
            # FDA headers never end in '$' (verified on the verbatim 2012Q4 and 2020Q3 samples)
            assert first[3 if bom else 0:] == exp[table].encode() + eol, (qs, table, first)
            assert (b"\r\n" in data) == (q != Quarter(2017, 4))
    assert truth["files"]["2012Q4"]["DRUG"]["bom"] is True


def test_field_counts_and_malformed_lines(mirror, truth):
    n_malformed = 0
    for qs, files in truth["files"].items():
        z = zipfile.ZipFile(mirror / truth["zips"][qs])
        for table, f in files.items():
            if table.startswith("DELETED"):
                lines = read_lines(z.read(f["member"]))
                assert len(lines) == f["data_lines"]
                assert all(re.fullmatch(rb"\s*\d+", ln) for ln in lines)
                continue
            lines = read_lines(z.read(f["member"]))
            assert len(lines) - 1 == f["data_lines"], (qs, table)
            # LAERS data rows end in one extra '$'; FAERS-era rows have exactly the header's fields
            width = lines[0].count(b"$") + f["trailing_dollar"]
            assert f["trailing_dollar"] == (Quarter.parse(qs).era == "laers")
            bad = {i for i, ln in enumerate(lines[1:], start=2)
                   if ln.count(b"$") != width or (f["trailing_dollar"] and not ln.endswith(b"$"))}
            assert bad == set(f["malformed_lines"]), (qs, table)
            n_malformed += len(bad)
            for i in f["encoding_fallback_lines"]:
                with pytest.raises(UnicodeDecodeError):
                    lines[i - 1].decode("utf-8")
                lines[i - 1].decode("cp1252")
    assert n_malformed >= len(truth["files"]), "every quarter carries a few malformed lines"
    fallback = sum(len(f["DRUG"]["encoding_fallback_lines"]) for f in truth["files"].values())
    assert fallback > 0, "some cp1252 bytes (SOLUCI\\xd3N) are expected"


def test_index_html(mirror, truth):
    page = (mirror / "index.html").read_text()
    assert "SYNTHETIC" in page.split("</title>")[0]
    hrefs = re.findall(r'<a href="([^"]+\.zip)"', page)
    assert sorted(hrefs) == sorted(truth["zips"].values())
    assert all("/" not in h for h in hrefs), "relative links (http://127.0.0.1 and file:// mirrors)"


def test_determinism(tmp_path):
    qs = parse_range("2019Q1:2019Q2")
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_mirror(a, qs, reports_per_quarter=300, seed=11, progress=False)
    write_mirror(b, qs, reports_per_quarter=300, seed=11, progress=False)
    write_mirror(c, qs, reports_per_quarter=300, seed=12, progress=False)
    files = sorted(p.name for p in a.iterdir())
    assert files == sorted(p.name for p in b.iterdir())
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "faers_ascii_2019Q1.zip").read_bytes() != (c / "faers_ascii_2019Q1.zip").read_bytes()
    # default: no DEMO primaryid twice within a quarter (the raw validation suite treats it as critical)
    for z in a.glob("*.zip"):
        zf = zipfile.ZipFile(z)
        demo = [n for n in zf.namelist() if "DEMO" in n.upper()][0]
        ids = [ln.split(b"$")[0] for ln in read_lines(zf.read(demo))[1:]]
        assert len(ids) == len(set(ids)) == 300


def test_bad_arguments(tmp_path):
    with pytest.raises(PipelineError):
        write_mirror(tmp_path, parse_range("2023Q1"), reports_per_quarter=5, seed=1, progress=False)
    with pytest.raises(PipelineError):
        write_mirror(tmp_path, [Quarter(2003, 4)], reports_per_quarter=100, seed=1, progress=False)


def test_cli_sample(tmp_path, capsys):
    from pipeline.cli import main

    assert main(["sample", "--out", str(tmp_path / "m"), "--quarters", "2024Q1", "--reports-per-quarter", "200",
                 "--seed", "3"]) == 0
    assert "SYNTHETIC" in capsys.readouterr().out
    assert (tmp_path / "m" / "truth.json").is_file() and (tmp_path / "m" / "index.html").is_file()


# --------------------------------------------------------------------------------------------
# content: names, versions, re-ships, deletes, injected effects
# --------------------------------------------------------------------------------------------
def load(mirror: Path, truth: dict) -> dict:
    """All quarters parsed with plain Python: {table: [row dicts with 'quarter']}."""
    out = defaultdict(list)
    for qs, files in truth["files"].items():
        z = zipfile.ZipFile(mirror / truth["zips"][qs])
        for table, f in files.items():
            data = z.read(f["member"])
            if table.startswith("DELETED"):
                out["DELETED"] += [{"caseid": ln.strip().decode(), "quarter": qs} for ln in read_lines(data)]
                continue
            for r in parse_table(data, table, set(f["malformed_lines"]), f["trailing_dollar"]):
                r["quarter"] = qs
                out[table].append(r)
    return out


@pytest.fixture(scope="module")
def db(mirror, truth):
    return load(mirror, truth)


def test_name_variants_and_traps_present(db):
    names = {r["drugname"] for r in db["DRUG"]}
    ais = {r.get("prod_ai", "") for r in db["DRUG"]}
    for n in ("SPRAVATO", "KETAMINE", "KETOROLAC TROMETHAMINE"):
        assert n in names, n
    assert {"KETAMINE", "KETAMINE HYDROCHLORIDE", "ESKETAMINE HYDROCHLORIDE"} <= ais
    assert any(n.upper().startswith("KETO") for n in names)
    assert any(re.search(r"KETAMINE\.?\s*$", n) for n in names)
    roles = defaultdict(int)
    for r in db["DRUG"]:
        roles[r["role_cod"]] += 1
    tot = sum(roles.values())
    assert 0.09 <= roles["PS"] / tot <= 0.30 and 0.25 <= roles["SS"] / tot <= 0.45
    assert 0.35 <= roles["C"] / tot <= 0.6 and 0 < roles["I"] / tot < 0.03


def test_versions_reships_and_deletes(db, truth):
    demo = db["DEMO"]
    faers = [r for r in demo if not Quarter.parse(r["quarter"]).era == "laers"]
    for r in faers:
        assert r["primaryid"] == r["caseid"] + r["caseversion"], r
    vers = defaultdict(set)
    for r in faers:
        vers[r["caseid"]].add(int(r["caseversion"]))
    special = str(truth["cases"]["version_9_24_caseid"])
    assert {9, 24} <= vers[special], "versions 9 and 24 of one case (string sort trap)"
    assert any(max(v) >= 10 for v in vers.values())
    where = defaultdict(set)
    for r in demo:
        where[(r["caseid"], r["primaryid"])].add(r["quarter"])
    assert any(len(v) > 1 for v in where.values()), "a version re-shipped in a later quarter"
    seen = defaultdict(int)
    for r in demo:
        seen[tuple(sorted(r.items()))] += 1
    assert any(v > 1 for v in seen.values()), "exact duplicate DEMO rows"
    deleted = {r["caseid"] for r in db["DELETED"]}
    assert len(deleted) == truth["cases"]["deleted_caseids"]
    shipped = {r["caseid"] for r in demo}
    assert deleted & shipped
    laers = [r for r in demo if Quarter.parse(r["quarter"]).era == "laers"]
    assert laers and sum(r["caseversion"] == "" for r in laers) / len(laers) > 0.6, "foll_seq mostly blank"
    assert any(r["occp_cod"] == "HP" for r in faers) and any(r["rept_cod"] == "30DAY" for r in faers)
    assert {r["age_cod"] for r in demo} >= {"YR", "DY", "DEC"}
    assert {len(r["event_dt"]) for r in demo} == {0, 4, 6, 8}
    q21 = {r["reporter_country"] for r in demo if r["quarter"] == "2021Q4"}
    q19 = {r["reporter_country"] for r in demo if r["quarter"] == "2019Q1"}
    assert "US" in q21 and "UNITED STATES" in q19


SUB_RE = re.compile(r"(?<![A-Z])(?P<pre>ES|AR|NOR|\(S\)-?|\(R\)-?|S-|R-)?KETAMIN(?:E|A)?(?![A-Z])")
BRANDS = {"SPRAVATO": "esketamine", "KETANEST S": "esketamine", "KETANEST-S": "esketamine", "KETALAR": "ketamine",
          "KETANEST": "ketamine", "KETASET": "ketamine", "VETALAR": "ketamine", "PCN-101": "arketamine"}


def substance(drugname: str, prod_ai: str) -> str | None:
    def norm(s):
        return re.sub(r"[.,;\s]+$", "", re.sub(r"\s+", " ", s.upper().strip()))

    def rx(s):
        m = SUB_RE.search(s)
        if not m:
            return None
        pre = (m.group("pre") or "").strip("()-")
        return {"ES": "esketamine", "S": "esketamine", "AR": "arketamine", "R": "arketamine",
                "NOR": "norketamine"}.get(pre, "ketamine")

    for part in re.split(r"\\| AND OR | OR ", norm(prod_ai)) if prod_ai else []:
        if rx(part):
            return rx(part)
    dn = norm(drugname)
    return rx(dn) or BRANDS.get(dn)


def test_truth_matches_independent_mini_pipeline(db, truth):
    """Curate the parsed files with the documented rules and compare every count with truth.json."""
    dup = check_truth(db, truth)
    assert len(dup) >= 3 and any(len(g) == 3 for g in dup)


def test_single_quarter_mirror_truth_and_malformed(tmp_path):
    """One quarter: no re-ship or superseded version exists, yet malformed lines stay truth-neutral."""
    write_mirror(tmp_path, [Quarter(2023, 1)], reports_per_quarter=3000, seed=5, progress=False)
    truth = json.loads((tmp_path / "truth.json").read_text())
    files = truth["files"]["2023Q1"]
    assert files["DEMO"]["malformed_lines"] and files["DRUG"]["malformed_lines"]
    check_truth(load(tmp_path, truth), truth)


def check_truth(db: dict, truth: dict) -> list:
    demo = db["DEMO"]
    tc = truth["cases"]
    assert len(demo) + tc["demo_rows_malformed"] == tc["demo_rows_total"]
    # 1-2: exact duplicates, then one row per (caseid, primaryid) from the latest quarter
    best: dict = {}
    for r in demo:
        k = (r["caseid"], r["primaryid"])
        if k not in best or Quarter.parse(r["quarter"]) > Quarter.parse(best[k]["quarter"]):
            best[k] = r
    assert len({r["primaryid"] for r in best.values()}) == tc["distinct_primaryids"]
    assert len({r["caseid"] for r in best.values()}) == tc["distinct_caseids"]
    # 3: deleted caseids (all lists, all quarters)
    deleted = {r["caseid"] for r in db["DELETED"]}
    rows = [r for r in best.values() if r["caseid"] not in deleted]

    # 4: highest integer version (LAERS blank = 0), ties: fda_dt, quarter, primaryid
    def vkey(r):
        v = int(r["caseversion"]) if r["caseversion"].isdigit() else 0
        return (v, r["fda_dt"], Quarter.parse(r["quarter"]), int(r["primaryid"]))
    kept: dict = {}
    for r in rows:
        if r["caseid"] not in kept or vkey(r) > vkey(kept[r["caseid"]]):
            kept[r["caseid"]] = r
    assert len(kept) == tc["kept_cases"]
    # children follow the kept (quarter-specific) primaryid
    sel = {(r["quarter"], r["primaryid"]): cid for cid, r in kept.items()}
    drugs, pts = defaultdict(list), defaultdict(set)
    for r in db["DRUG"]:
        cid = sel.get((r["quarter"], r["primaryid"]))
        if cid:
            drugs[cid].append(r)
    for r in db["REAC"]:
        cid = sel.get((r["quarter"], r["primaryid"]))
        if cid:
            pts[cid].add(r["pt"].casefold())
    cand = [c for c in kept if drugs[c] and pts[c]]
    assert len(cand) == tc["kept_cases_with_drug_and_pt"]
    # duplicate groups: identical non-blank patient/event fields, drug set and PT set
    groups = defaultdict(list)
    for c in cand:
        r = kept[c]
        if len(r["event_dt"]) != 8 or not r["age"] or r["sex"] not in ("M", "F") \
                or r.get("reporter_country", "") in ("", "COUNTRY NOT SPECIFIED"):
            continue
        key = (r["event_dt"], r["age"], r["age_cod"], r["sex"], r["reporter_country"],
               frozenset((d["drugname"].upper(), d["role_cod"]) for d in drugs[c]), frozenset(pts[c]))
        groups[key].append(c)
    dup = sorted(sorted(int(c) for c in g) for g in groups.values() if len(g) > 1)
    assert dup == tc["duplicate_groups"]
    for g in dup:  # one patient reported by different manufacturers
        assert len({kept[str(c)]["mfr_sndr"] for c in g}) == len(g)
        assert len({kept[str(c)]["mfr_num"] for c in g}) == len(g)
    excluded = set()
    for g in groups.values():
        if len(g) > 1:
            top = max(g, key=lambda c: (kept[c]["fda_dt"], int(c)))
            excluded |= set(g) - {top}
    analysis = [c for c in cand if c not in excluded]
    assert len(analysis) == tc["analysis_population"]
    # substances under PS+SS, pairs and PT groups
    groups_pt = {g: {p.casefold() for p in v} for g, v in truth["pt_groups"].items()}
    for s in ("ketamine", "esketamine", "arketamine", "norketamine", "ketamine_family"):
        exp = truth["substances"][s]
        exposed = [c for c in analysis if any(
            (substance(d["drugname"], d.get("prod_ai", "")) or "-") in
            ((s,) if s != "ketamine_family" else ("ketamine", "esketamine", "arketamine", "norketamine"))
            and d["role_cod"] in ("PS", "SS") for d in drugs[c])]
        assert len(exposed) == exp["reports"], s
        for g, members in groups_pt.items():
            assert sum(bool(pts[c] & members) for c in exposed) == exp["pt_groups"][g], (s, g)
        diss = sum("dissociation" in pts[c] for c in exposed)
        assert diss == exp["pairs"].get("Dissociation", 0), s
    conc = [c for c in analysis if any(substance(d["drugname"], d.get("prod_ai", "")) == "ketamine"
                                       and d["role_cod"] == "C" for d in drugs[c])]
    assert conc, "peri-operative ketamine as a concomitant (must not count as exposure)"
    return dup


def test_injected_effects(truth):
    esk = truth["substances"]["esketamine"]
    assert esk["reports"] >= 8
    assert truth["prr"]["esketamine"]["Dissociation"] > 50
    assert truth["prr"]["esketamine"]["dissociation"] > 50
    assert truth["prr"]["ketamine_family"]["dissociation"] > 10
    assert truth["substances"]["ketamine"]["reports"] > 0
    assert truth["ketamine_concomitant_only_reports"] > 0
    assert truth["injected"]["multipliers"]["esketamine"]["Dissociation"] > 100
    fam = truth["substances"]["ketamine_family"]["reports"]
    parts = sum(truth["substances"][s]["reports"] for s in ("ketamine", "esketamine", "arketamine", "norketamine"))
    assert parts >= fam > 0


def test_rewrite_replaces_previous_synthetic_mirror(tmp_path):
    write_mirror(tmp_path, parse_range("2020Q1:2020Q2"), reports_per_quarter=100, seed=1, progress=False)
    write_mirror(tmp_path, parse_range("2020Q2:2020Q3"), reports_per_quarter=100, seed=1, progress=False)
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert sorted(p.name for p in tmp_path.glob("*.zip")) == sorted(truth["zips"].values())
    assert truth["quarters"] == ["2020Q2", "2020Q3"]


# --------------------------------------------------------------------------------------------
# background drug-event association (what the MGPS prior models)
# --------------------------------------------------------------------------------------------
def _report_level_counts(model):
    """Report-level ingredient (PS/SS) x PT counts over every content with a PT: (counts frame, dense N, E)."""
    import numpy as np
    import pandas as pd

    ing = model.products.ingredient[model.drug["prod"]]
    dc = model.drug["content"]
    has_pt = model.pt_cnt > 0
    keep = (model.drug["role"] <= 1) & has_pt[dc]
    dpairs = pd.DataFrame({"c": dc[keep], "drug": ing[keep]}).drop_duplicates()
    ppairs = pd.DataFrame({"c": model.pt["content"], "event": model.pt["pt"]}).drop_duplicates()
    n_total = int(has_pt.sum())
    counts = dpairs.merge(ppairs, on="c").groupby(["drug", "event"]).size().rename("a").reset_index()
    n_drug = dpairs.groupby("drug").size().rename("n_drug")
    n_event = ppairs.groupby("event").size().rename("n_event")
    counts = counts.join(n_drug, on="drug").join(n_event, on="event")
    counts["n_total"] = n_total
    nd = np.zeros(len(model.products.ingredient_names))
    nd[n_drug.index.to_numpy()] = n_drug.to_numpy()
    ne = np.zeros(len(model.pts.names))
    ne[n_event.index.to_numpy()] = n_event.to_numpy()
    dense = np.zeros((len(nd), len(ne)))
    dense[counts["drug"].to_numpy(), counts["event"].to_numpy()] = counts["a"].to_numpy()
    return counts, dense, np.outer(nd, ne) / n_total


def _dispersion(dense, expected):
    """Mean of (N - E)^2 / E over every ingredient x PT cell (zeros included) with E > 1: about 1 (a little
    less: fixed margins) when drugs and events are independent, clearly more with drug-event association."""
    sel = expected > 1
    return float((((dense - expected) ** 2)[sel] / expected[sel]).mean()), int(sel.sum())


def test_background_association_is_overdispersed_and_mgps_converges(monkeypatch):
    """Real FAERS has strong drug-event associations (the heavy-tailed relative reporting ratios the DuMouchel
    prior models); the synthetic background has them too, so the MGPS prior fit converges consistently with the
    default likelihood and no boundary warning, and a background without them (multipliers = 1) is Poisson-like."""
    from pipeline.synthetic import _catalog as cat
    from pipeline.synthetic._model import Model
    from pipeline.stats.mgps import fit_mgps

    quarters = parse_range("2023Q1:2023Q4")
    model = Model(quarters, 3000, seed=7)
    counts, dense, expected = _report_level_counts(model)
    disp, cells = _dispersion(dense, expected)
    assert cells > 5000
    # variance of N/E across pairs with E > 1 against the Poisson expectation Var(N/E) = 1/E
    assert disp > 2.0, f"background not over-dispersed: mean (N-E)^2/E = {disp:.2f} over {cells} cells"
    fit = fit_mgps(counts, likelihood="openebgm")
    assert fit.converged, fit.warnings
    assert not fit.warnings, fit.warnings
    a1, b1, a2, b2, p = fit.theta
    assert 0.01 < p < 0.5
    # a tight component around 1 and a heavy-tailed one (gamma shape < 1: CV > 1) of elevated ratios
    assert min(a1, a2) < 1 < 5 < max(a1, a2)
    heavy = (a1, b1) if a1 < a2 else (a2, b2)
    assert heavy[0] / heavy[1] > 1

    # control: the same generator without association is not over-dispersed
    monkeypatch.setattr(cat, "BACKGROUND_ASSOCIATION", {**cat.BACKGROUND_ASSOCIATION, "p_elevated": 0.0,
                                                        "usual": {"shape": 1e12, "rate": 1e12}})
    flat = Model(quarters, 3000, seed=7)
    disp0, _ = _dispersion(*_report_level_counts(flat)[1:])
    assert disp0 < 1.3, disp0


def test_background_association_recorded_and_deterministic(truth):
    from pipeline.synthetic import _catalog as cat
    from pipeline.synthetic._model import Model

    rec = truth["injected"]["background_association"]
    for k, v in cat.BACKGROUND_ASSOCIATION.items():
        assert rec[k] == v
    a = Model(parse_range("2024Q1"), 200, seed=3)
    b = Model(parse_range("2024Q1"), 200, seed=3)
    assert (a._assoc_flat == b._assoc_flat).all() and (a.pt["pt"] == b.pt["pt"]).all()
    # the multipliers depend on the seed only, not on the quarters asked for
    c = Model(parse_range("2019Q1:2019Q2"), 100, seed=3)
    assert (a._assoc_flat == c._assoc_flat).all()
