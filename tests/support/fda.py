"""Build FDA-layout quarterly zips from real sample files or hand-made text (test helper)."""

from __future__ import annotations

import zipfile
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def folder_members(folder: Path, rename=lambda name: name, prefix: str = "ASCII/") -> dict[str, bytes]:
    return {prefix + rename(p.name): p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def faers12_zip(path: Path) -> Path:
    """The verbatim 2012Q4 heads (lower-case names, BOM in DRUG, FAERS-A headers)."""
    return write_zip(path, folder_members(FIXTURES / "ubesp" / "faers12", prefix="ascii/"))


def faers20_zip(path: Path) -> Path:
    """2020Q3: the 10,000-row samples (CRLF DEMO with a cut last line) plus the 10-row INDI head."""
    members = folder_members(FIXTURES / "ubesp" / "faers20_first10000",
                             rename=lambda n: n.replace("-10000", ""))
    members["ASCII/INDI20Q3.txt"] = (FIXTURES / "ubesp" / "faers20_head10" / "INDI20Q3-10.txt").read_bytes()
    members["Deleted/DELETE20Q3.txt"] = b"10004694\r\n10035487\r\n"
    return write_zip(path, members)


HEADERS_B = {
    "DEMO": "primaryid$caseid$caseversion$i_f_code$event_dt$mfr_dt$init_fda_dt$fda_dt$rept_cod$auth_num$mfr_num$"
            "mfr_sndr$lit_ref$age$age_cod$age_grp$sex$e_sub$wt$wt_cod$rept_dt$to_mfr$occp_cod$reporter_country$"
            "occr_country",
    "DRUG": "primaryid$caseid$drug_seq$role_cod$drugname$prod_ai$val_vbm$route$dose_vbm$cum_dose_chr$cum_dose_unit$"
            "dechal$rechal$lot_num$exp_dt$nda_num$dose_amt$dose_unit$dose_form$dose_freq",
    "REAC": "primaryid$caseid$pt$drug_rec_act",
    "OUTC": "primaryid$caseid$outc_cod",
    "RPSR": "primaryid$caseid$rpsr_cod",
    "THER": "primaryid$caseid$dsg_drug_seq$start_dt$end_dt$dur$dur_cod",
    "INDI": "primaryid$caseid$indi_drug_seq$indi_pt",
}


def demo_row(primaryid: int, caseid: int, version: int, fda_dt: str = "20240115", **kw) -> str:
    vals = dict.fromkeys(HEADERS_B["DEMO"].split("$"), "")
    vals.update(primaryid=str(primaryid), caseid=str(caseid), caseversion=str(version), i_f_code="I",
                fda_dt=fda_dt, init_fda_dt=fda_dt, rept_cod="EXP", age="40", age_cod="YR", sex="F",
                occp_cod="MD", reporter_country="US", occr_country="US")
    vals.update({k: str(v) for k, v in kw.items()})
    return "$".join(vals.values())


def minimal_quarter(yyqq: str = "24Q1", *, demo_rows: list[str] | None = None, extra: dict[str, bytes] | None = None,
                    eol: str = "\r\n") -> dict[str, bytes]:
    """A tiny but complete FAERS-B quarter: one case with one drug and one PT in every table."""
    demo_rows = demo_rows or [demo_row(1001, 100, 1)]
    rows = {
        "DEMO": demo_rows,
        "DRUG": ["1001$100$1$PS$SPRAVATO$ESKETAMINE HYDROCHLORIDE$1$Nasal$56 MG$$$U$$$$211243$56$MG$SPRAY$"],
        "REAC": ["1001$100$Dissociation$"],
        "OUTC": ["1001$100$OT"],
        "RPSR": ["1001$100$HP"],
        "THER": ["1001$100$1$20240101$$$"],
        "INDI": ["1001$100$1$Depression"],
    }
    members = {f"ASCII/{t}{yyqq}.txt": (eol.join([HEADERS_B[t], *r]) + eol).encode() for t, r in rows.items()}
    members[f"Deleted/DELETE{yyqq}.txt"] = f"999999{eol}".encode()
    members.update(extra or {})
    return members
