"""Fixed catalogues of the synthetic mirror: products, PTs, codes, headers, file names per era."""

from __future__ import annotations

import numpy as np

from pipeline.quarters import Quarter
from pipeline.synthetic import _vocab

SUBSTANCES = ("ketamine", "esketamine", "arketamine", "norketamine")

# --------------------------------------------------------------------------------------------
# Products: one row per (drugname, prod_ai) variant. Substance -1 = not ketamine-family.
# --------------------------------------------------------------------------------------------
#: (drugname, prod_ai, weight, nda_num); weights are relative within a substance / trap list.
KETAMINE_SUSPECT = [
    ("KETAMINE", "KETAMINE", 30, ""), ("KETAMINE HCL", "KETAMINE HYDROCHLORIDE", 10, ""),
    ("KETAMINE HYDROCHLORIDE.", "KETAMINE HYDROCHLORIDE", 12, ""),
    ("KETAMINE HYDROCHLORIDE", "KETAMINE HYDROCHLORIDE", 15, ""), ("KETAMINE ", "KETAMINE", 4, ""),
    ("KETALAR", "KETAMINE HYDROCHLORIDE", 10, "016812"), ("KETANEST", "KETAMINE HYDROCHLORIDE", 3, ""),
    ("KETAMINE HYDROCHLORIDE INJECTION", "KETAMINE HYDROCHLORIDE", 4, ""), ("KETAMINA", "KETAMINE", 2, ""),
    ("KETAMIN", "KETAMINE", 2, ""), ("Ketamine", "KETAMINE", 3, ""),
]
ESKETAMINE = [
    ("SPRAVATO", "ESKETAMINE HYDROCHLORIDE", 50, "211243"), ("SPRAVATO (ESKETAMINE)", "ESKETAMINE", 10, ""),
    ("ESKETAMINE HYDROCHLORIDE", "ESKETAMINE HYDROCHLORIDE", 8, ""), ("ESKETAMINE", "ESKETAMINE", 8, ""),
    ("ESKETAMINE NASAL SPRAY", "ESKETAMINE", 4, ""), ("Spravato", "ESKETAMINE HYDROCHLORIDE", 3, "211243"),
    ("KETANEST S", "ESKETAMINE HYDROCHLORIDE", 4, ""), ("KETANEST-S", "ESKETAMINE HYDROCHLORIDE", 2, ""),
    ("S-KETAMINE", "ESKETAMINE", 2, ""), ("ESKETAMIN", "ESKETAMINE", 1, ""),
]
#: before 2019Q1 (no Spravato yet) only the EU anaesthetic names
ESKETAMINE_EARLY = {"KETANEST S", "KETANEST-S", "S-KETAMINE", "ESKETAMINE HYDROCHLORIDE", "ESKETAMINE"}
ARKETAMINE = [("ARKETAMINE", "ARKETAMINE", 2, ""), ("R-KETAMINE", "", 2, ""), ("(R)-KETAMINE", "", 1, ""),
              ("PCN-101", "", 3, "")]
NORKETAMINE = [("NORKETAMINE", "NORKETAMINE", 1, "")]
#: look-alike traps: (drugname, prod_ai, weight, nda, trap ingredient)
TRAPS = [
    ("KETOROLAC TROMETHAMINE", "KETOROLAC TROMETHAMINE", 20, "074802", "KETOROLAC"),
    ("TORADOL", "KETOROLAC TROMETHAMINE", 8, "019645", "KETOROLAC"), ("KETOROLAC", "KETOROLAC", 6, "", "KETOROLAC"),
    ("KETOPROFEN", "KETOPROFEN", 15, "", "KETOPROFEN"), ("PROFENID", "KETOPROFEN", 4, "", "KETOPROFEN"),
    ("ZADITOR", "KETOTIFEN FUMARATE", 4, "021066", "KETOTIFEN"), ("KETOTIFEN", "KETOTIFEN", 4, "", "KETOTIFEN"),
    ("KETOCONAZOLE", "KETOCONAZOLE", 6, "", "KETOCONAZOLE"), ("NIZORAL", "KETOCONAZOLE", 3, "", "KETOCONAZOLE"),
    ("HYDROXYNORKETAMINE", "HYDROXYNORKETAMINE", 1, "", "HYDROXYNORKETAMINE"),
    ("DEHYDRONORKETAMINE", "DEHYDRONORKETAMINE", 1, "", "DEHYDRONORKETAMINE"),
]
#: a product whose name carries a non-ASCII letter; written as cp1252 bytes in some quarters
ACCENTED = ("CLORURO DE SODIO SOLUCIÓN", "SODIUM CHLORIDE")


class Products:
    """Global product table (numpy index space shared by the model and the writer)."""

    def __init__(self) -> None:
        names, ais, ings, ndas, subs, wts, kinds = [], [], [], [], [], [], []
        ing_names: list[str] = []

        def ing_id(name: str) -> int:
            if name not in ing_index:
                ing_index[name] = len(ing_names)
                ing_names.append(name)
            return ing_index[name]

        ing_index: dict[str, int] = {}
        # background: vocabulary of real 2020Q3 names (Zipf-like counts as found)
        for k, (ai, cnt, variants) in enumerate(_vocab.INGREDIENTS):
            tot = sum(c for _, c in variants)
            nda = "" if k % 2 else f"0{20000 + (k * 7919) % 79999:05d}"
            for dn, c in variants:
                names.append(dn); ais.append(ai); ings.append(ing_id(ai)); ndas.append(nda); subs.append(-1)
                wts.append(cnt * c / tot); kinds.append("bg")
        for j, dn in enumerate(_vocab.UNMAPPED_DRUGNAMES):
            names.append(dn.replace("?", " ")); ais.append(""); ings.append(ing_id("UNMAPPED:" + dn)); ndas.append("")
            subs.append(-1); wts.append(3.0); kinds.append("bg")
        names.append(ACCENTED[0]); ais.append(ACCENTED[1]); ings.append(ing_id(ACCENTED[1])); ndas.append("")
        subs.append(-1); wts.append(4.0); kinds.append("bg")
        self.accented = len(names) - 1
        for s, table in enumerate((KETAMINE_SUSPECT, ESKETAMINE, ARKETAMINE, NORKETAMINE)):
            for dn, ai, w, nda in table:
                names.append(dn); ais.append(ai); ings.append(ing_id(SUBSTANCES[s].upper())); ndas.append(nda)
                subs.append(s); wts.append(w); kinds.append(SUBSTANCES[s])
        for dn, ai, w, nda, ing in TRAPS:
            names.append(dn); ais.append(ai); ings.append(ing_id(ing)); ndas.append(nda); subs.append(-1)
            wts.append(w); kinds.append("trap")
        self.drugname = names
        self.prod_ai = ais
        self.ingredient = np.array(ings, dtype=np.int32)
        self.ingredient_names = ing_names
        self.nda = ndas
        self.substance = np.array(subs, dtype=np.int8)
        self.weight = np.array(wts, dtype=np.float64)
        self.kind = np.array(kinds)

    def ids(self, kind: str, only: set[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Product ids of a kind and their sampling probabilities."""
        ids = np.flatnonzero(self.kind == kind)
        if only is not None:
            ids = np.array([i for i in ids if self.drugname[i] in only])
        w = self.weight[ids]
        return ids, w / w.sum()


# --------------------------------------------------------------------------------------------
# PTs
# --------------------------------------------------------------------------------------------
PT_GROUPS = {
    "dissociation": ["Dissociation", "Dissociative disorder", "Depersonalisation/derealisation disorder",
                     "Derealisation", "Depersonalisation"],
    "tachycardia": ["Tachycardia", "Heart rate increased", "Sinus tachycardia"],
    "hypertension": ["Hypertension", "Blood pressure increased", "Blood pressure systolic increased",
                     "Blood pressure diastolic increased", "Hypertensive crisis"],
}
#: focus PTs with their background rate (probability per report) and multipliers per exposure.
FOCUS_BASE = {
    "Dissociation": 0.0008, "Dissociative disorder": 0.0001, "Depersonalisation/derealisation disorder": 0.00005,
    "Derealisation": 0.00008, "Depersonalisation": 0.00008, "Sedation": 0.002,
    "Tachycardia": 0.004, "Heart rate increased": 0.003, "Sinus tachycardia": 0.0008,
    "Hypertension": 0.006, "Blood pressure increased": 0.0045, "Blood pressure systolic increased": 0.0004,
    "Blood pressure diastolic increased": 0.0002, "Hypertensive crisis": 0.0002,
    "Depression": 0.003,
}
MULTIPLIERS = {
    "esketamine": {"Dissociation": 600.0, "Dissociative disorder": 300.0, "Derealisation": 150.0,
                   "Depersonalisation": 100.0, "Depersonalisation/derealisation disorder": 100.0,
                   "Sedation": 80.0, "Blood pressure increased": 12.0, "Hypertension": 6.0,
                   "Blood pressure systolic increased": 10.0, "Hypertensive crisis": 10.0,
                   "Tachycardia": 4.0, "Heart rate increased": 5.0, "Depression": 25.0},
    "ketamine": {"Dissociation": 150.0, "Dissociative disorder": 80.0, "Derealisation": 40.0,
                 "Sedation": 20.0, "Blood pressure increased": 4.0, "Hypertension": 2.5,
                 "Tachycardia": 3.0, "Heart rate increased": 3.0},
    "arketamine": {"Dissociation": 50.0},
    "norketamine": {},
}
FOCUS_CAP = 0.6

#: Background drug-event association (the heavy-tailed distribution of relative reporting ratios that the MGPS
#: prior models). Every background ingredient (not the ketamine family) gets a multiplier per background PT drawn
#: from a two-gamma mixture (shape, rate): with probability ``p_elevated`` from the heavy-tailed "elevated"
#: component, otherwise from the "usual" component around 1. A report's background PT draws each pick one of the
#: report's suspect (PS/SS) rows ("responsible" drug; the PS row with probability ``p_responsible_ps``, else a
#: suspect row at random) and draw from the global PT distribution tilted by that ingredient's multipliers
#: (P(PT j | ingredient i) = p_j x m_ij / sum_k p_k x m_ik); reports without a suspect background ingredient, and
#: draws whose responsible row is a ketamine-family product, draw from the untilted distribution. The focus PTs
#: are not background PTs: their injected rates above are unchanged. The multipliers depend on the seed only.
BACKGROUND_ASSOCIATION = {
    "p_elevated": 0.08,
    "elevated": {"shape": 0.5, "rate": 0.04},
    "usual": {"shape": 2.5, "rate": 2.5},
    "p_responsible_ps": 0.6,
}

INDICATIONS_BG = [("Product used for unknown indication", 30), ("Hypertension", 0), ("Rheumatoid arthritis", 6),
                  ("Type 2 diabetes mellitus", 5), ("Asthma", 4), ("Pain", 5), ("Multiple sclerosis", 3),
                  ("Plasma cell myeloma", 3), ("Chronic lymphocytic leukaemia", 3), ("Psoriasis", 3),
                  ("Crohn's disease", 2), ("Atrial fibrillation", 3), ("Hypercholesterolaemia", 4),
                  ("Breast cancer", 3), ("Prophylaxis", 3), ("Schizophrenia", 2), ("Major depression", 2),
                  ("Epilepsy", 2), ("Osteoporosis", 2), ("Gastrooesophageal reflux disease", 3),
                  ("Insomnia", 1), ("Anxiety", 1), ("HIV infection", 1), ("Migraine", 1), ("Pulmonary hypertension", 2)]
INDICATIONS_BG = [(p, w) for p, w in INDICATIONS_BG if w > 0]
INDICATIONS_SUB = {
    "esketamine": [("Depression", 5), ("Major depression", 3), ("Treatment resistant depression", 1),
                   ("Suicidal ideation", 1)],
    "ketamine": [("Anaesthesia", 4), ("Depression", 2), ("Pain", 2), ("Sedation", 0)],
    "ketamine_c": [("Anaesthesia", 5), ("General anaesthesia", 3), ("Analgesic therapy", 1)],
    "arketamine": [("Depression", 1)], "norketamine": [("Product used for unknown indication", 1)],
}
for _k in INDICATIONS_SUB:
    INDICATIONS_SUB[_k] = [(p, w) for p, w in INDICATIONS_SUB[_k] if w > 0]


class Pts:
    def __init__(self) -> None:
        bg = [p for p, _ in _vocab.PTS]
        self.names: list[str] = list(bg)
        self.bg_weight = np.array([c for _, c in _vocab.PTS], dtype=np.float64) ** 1.1
        self.bg_weight /= self.bg_weight.sum()
        self.n_bg = len(bg)
        for p in FOCUS_BASE:
            if p not in self.names:
                self.names.append(p)
        self.index = {p: i for i, p in enumerate(self.names)}
        self.focus = np.array([self.index[p] for p in FOCUS_BASE], dtype=np.int32)


# --------------------------------------------------------------------------------------------
# Codes and distributions
# --------------------------------------------------------------------------------------------
ROLES = ["PS", "SS", "C", "I"]
ROUTES = [("Oral", 33), ("", 23), ("Unknown", 20), ("Intravenous (not otherwise specified)", 10),
          ("Subcutaneous", 6.5), ("Intravenous drip", 1.6), ("Intramuscular", 1.1), ("Topical", 0.6),
          ("Respiratory (inhalation)", 0.5), ("Transdermal", 0.5), ("Nasal", 0.3)]
FORMS = [("", 56), ("TABLET", 10), ("CAPSULE", 5.7), ("UNSPECIFIED", 4.6), ("UNKNOWN", 4.4),
         ("FILM-COATED TABLET", 3.8), ("CAPSULE, HARD", 2.3), ("SOLUTION FOR INJECTION", 1.8), ("INJECTION", 1.1),
         ("SOLUTION FOR INFUSION", 0.8), ("SPRAY", 0.3)]
UNITS = [("", 47), ("MG", 43), ("DF", 3.7), ("ML", 1.1), ("G", 1.1), ("MG/KG", 0.9), ("UG", 0.9), ("IU", 0.7),
         ("MG/M**2", 0.5)]
FREQS = [("", 70), ("QD", 17), ("BID", 5.2), ("TID", 2), ("QOW", 1.4), ("/wk", 1.1), ("/month", 1), ("QID", 0.6),
         ("Q3W", 0.4), ("BIW", 0.4)]
DECHAL = [("", 50), ("U", 27), ("Y", 11.5), ("D", 10), ("N", 1.1)]
RECHAL = [("", 80), ("U", 12), ("N", 3), ("Y", 1), ("D", 4)]
OUTC = [("HO", 44.7), ("OT", 33.2), ("DE", 14.9), ("LT", 4.5), ("DS", 2.1), ("CA", 0.7), ("RI", 0.5)]
RPSR = [("HP", 70), ("CSM", 22), ("FGN", 5), ("UF", 1), ("LIT", 1), ("SDY", 0.5), ("CR", 0.3), ("DT", 0.2)]
REPT = [("EXP", 71.5), ("PER", 25.5), ("DIR", 2.2), ("30DAY", 0.6), ("5DAY", 0.2)]
OCCP_FAERS = [("MD", 37.8), ("CN", 37.8), ("HP", 20), ("LW", 2.6), ("PH", 1.1), ("OT", 0.2), ("", 0.5)]
OCCP_LAERS = ["MD", "CN", "OT", "LW", "PH", "OT", ""]  # HP did not exist: mapped to OT
SEX = [("F", 53), ("M", 40.5), ("", 6), ("UNK", 0.5)]
AGE_COD = ["", "YR", "DY", "MON", "DEC"]
AGE_GRP = ["", "N", "I", "C", "T", "A", "E"]

COUNTRY_NAMES = {
    "US": "UNITED STATES", "CA": "CANADA", "JP": "JAPAN", "GB": "UNITED KINGDOM", "FR": "FRANCE",
    "DE": "GERMANY", "ES": "SPAIN", "IT": "ITALY", "BR": "BRAZIL", "NL": "NETHERLANDS", "AU": "AUSTRALIA",
    "PL": "POLAND", "PT": "PORTUGAL", "KR": "KOREA, REPUBLIC OF", "GR": "GREECE", "CN": "CHINA", "BE": "BELGIUM",
    "RU": "RUSSIAN FEDERATION", "TR": "TURKEY", "IL": "ISRAEL", "CO": "COLOMBIA", "CZ": "CZECH REPUBLIC",
    "UA": "UKRAINE", "AR": "ARGENTINA", "ZA": "SOUTH AFRICA", "AT": "AUSTRIA", "TW": "TAIWAN, PROVINCE OF CHINA",
    "DK": "DENMARK", "HU": "HUNGARY", "IN": "INDIA", "SE": "SWEDEN", "CH": "SWITZERLAND", "IE": "IRELAND",
    "MX": "MEXICO", "NZ": "NEW ZEALAND", "FI": "FINLAND", "CL": "CHILE", "NO": "NORWAY", "RO": "ROMANIA",
}
NOT_SPECIFIED = "COUNTRY NOT SPECIFIED"
COUNTRY_CODES = [c for c, _ in _vocab.COUNTRIES] + [NOT_SPECIFIED]
COUNTRY_WEIGHT = np.array([w for _, w in _vocab.COUNTRIES] + [142.0])
MFR = [m for m, _ in _vocab.MFR_SNDR]
MFR_WEIGHT = np.array([w for _, w in _vocab.MFR_SNDR], dtype=np.float64)


def probs(pairs) -> tuple[list[str], np.ndarray]:
    vals = [v for v, _ in pairs]
    w = np.array([w for _, w in pairs], dtype=np.float64)
    return vals, w / w.sum()


# --------------------------------------------------------------------------------------------
# Eras, headers and names
# --------------------------------------------------------------------------------------------
TABLES = ("DEMO", "DRUG", "REAC", "OUTC", "RPSR", "THER", "INDI")

HEADERS_B = {
    "DEMO": "primaryid$caseid$caseversion$i_f_code$event_dt$mfr_dt$init_fda_dt$fda_dt$rept_cod$auth_num$mfr_num"
            "$mfr_sndr$lit_ref$age$age_cod$age_grp$sex$e_sub$wt$wt_cod$rept_dt$to_mfr$occp_cod$reporter_country"
            "$occr_country",
    "DRUG": "primaryid$caseid$drug_seq$role_cod$drugname$prod_ai$val_vbm$route$dose_vbm$cum_dose_chr$cum_dose_unit"
            "$dechal$rechal$lot_num$exp_dt$nda_num$dose_amt$dose_unit$dose_form$dose_freq",
    "REAC": "primaryid$caseid$pt$drug_rec_act",
    "OUTC": "primaryid$caseid$outc_cod",
    "RPSR": "primaryid$caseid$rpsr_cod",
    "THER": "primaryid$caseid$dsg_drug_seq$start_dt$end_dt$dur$dur_cod",
    "INDI": "primaryid$caseid$indi_drug_seq$indi_pt",
}
HEADERS_A_2012Q4 = {
    **HEADERS_B,
    "DEMO": "primaryid$caseid$caseversion$i_f_code$event_dt$mfr_dt$init_fda_dt$fda_dt$rept_cod$mfr_num$mfr_sndr"
            "$age$age_cod$gndr_cod$e_sub$wt$wt_cod$ rept_dt$to_mfr$occp_cod$reporter_country$occr_country",
    "DRUG": "primaryid$caseid$drug_seq$role_cod$drugname$val_vbm$route$dose_vbm$cum_dose_chr$cum_dose_unit$dechal"
            "$rechal$lot_nbr$exp_dt$nda_num$dose_amt$dose_unit$dose_form$dose_freq",
    "REAC": "primaryid$caseid$pt",
    "OUTC": "primaryid$caseid$outc_code",
}
HEADERS_A = {
    **HEADERS_A_2012Q4,
    "DEMO": HEADERS_A_2012Q4["DEMO"].replace("$ rept_dt", "$rept_dt"),
    "DRUG": HEADERS_A_2012Q4["DRUG"].replace("lot_nbr", "lot_num"),
    "OUTC": "primaryid$caseid$outc_cod",
}
_LAERS_DEMO = "isr$case$i_f_cod$foll_seq$image$event_dt$mfr_dt$fda_dt$rept_cod$mfr_num$mfr_sndr$age$age_cod" \
              "$gndr_cod$e_sub$wt$wt_cod$rept_dt$occp_cod$death_dt$to_mfr$confid"
#: LAERS first shipped reporter_country in 2008Q1 here (the real first quarter is unverified)
LAERS_COUNTRY_FROM = Quarter(2008, 1)
HEADERS_LAERS = {
    "DEMO": _LAERS_DEMO,
    "DRUG": "isr$drug_seq$role_cod$drugname$val_vbm$route$dose_vbm$dechal$rechal$lot_num$exp_dt$nda_num",
    "REAC": "isr$pt", "OUTC": "isr$outc_cod", "RPSR": "isr$rpsr_cod",
    "THER": "isr$drug_seq$start_dt$end_dt$dur$dur_cod", "INDI": "isr$drug_seq$indi_pt",
}


def headers(q: Quarter) -> dict[str, str]:
    """Exact header text (without the trailing ``$``) of each table in quarter ``q``."""
    if q.era == "laers":
        h = dict(HEADERS_LAERS)
        if q >= LAERS_COUNTRY_FROM:
            h["DEMO"] = _LAERS_DEMO + "$reporter_country"
        return {t: v.upper() for t, v in h.items()}
    if q.era == "faers_a":
        return dict(HEADERS_A_2012Q4 if q == Quarter(2012, 4) else HEADERS_A)
    return dict(HEADERS_B)


_UPPER_Q = {Quarter(2019, 1), Quarter(2023, 4), Quarter(2020, 1), Quarter(2021, 3), Quarter(2016, 2)}
_LOWER_Q = {Quarter(2024, 1), Quarter(2023, 2), Quarter(2018, 1), Quarter(2023, 1)}


def zip_name(q: Quarter) -> str:
    if q.era == "laers":
        return f"aers_ascii_{q.year}q{q.q}.zip"
    upper = q in _UPPER_Q or (q not in _LOWER_Q and q.index % 3 == 0)
    return f"faers_ascii_{q.year}{'Q' if upper else 'q'}{q.q}.zip"


def ascii_folder(q: Quarter) -> str:
    return "ascii" if q < Quarter(2018, 3) else "ASCII"


def member_name(q: Quarter, table: str) -> str:
    yy = q.yyqq  # 23Q1
    if q.era == "laers":
        return f"ascii/{table}{yy}.TXT"
    if q == Quarter(2012, 4):
        return f"ascii/{table.lower()}{yy.lower()}.txt"
    if q == Quarter(2018, 1) and table == "DEMO":
        return f"{ascii_folder(q)}/DEMO{yy}_new.txt"
    return f"{ascii_folder(q)}/{table}{yy}.txt"


def deleted_member(q: Quarter) -> str | None:
    """FDA's deleted-case list name in quarter ``q``, None before 2019Q1."""
    yy = q.yyqq
    if q < Quarter(2019, 1):
        return None
    if q < Quarter(2020, 1):
        return f"deleted/ADR{yy}DeletedCases.txt"
    if q < Quarter(2020, 3):
        return f"DELETED/ADR{yy}DeletedCases.txt"
    if q == Quarter(2020, 3):
        return f"Deleted/ADR{yy}DeletedCases.txt"
    if q < Quarter(2021, 4):
        return f"Deleted/{yy}DeletedCases.txt"
    return f"Deleted/DELETE{yy}.txt"


ALL_DELETED_MEMBER = "deleted/AllDeletedCases.txt"  # one-off, 2019Q1


def line_ending(q: Quarter) -> bytes:
    return b"\n" if q == Quarter(2017, 4) else b"\r\n"


def has_bom(q: Quarter, table: str) -> bool:
    if q == Quarter(2012, 4):
        return table == "DRUG"
    return q.era != "laers" and table == "DEMO" and (q.year + q.q) % 4 == 0


def cp1252_quarter(q: Quarter) -> bool:
    """Quarters whose accented drug names are written as cp1252 bytes (``SOLUCI\\xd3N``), not UTF-8."""
    return q.index % 3 != 1


def has_stat_files(q: Quarter) -> bool:
    return Quarter(2013, 1) <= q <= Quarter(2016, 4) or Quarter(2006, 1) <= q <= Quarter(2007, 4)


def country_names(q: Quarter) -> bool:
    """Before 2021Q4 reporter_country holds country names, after GENC codes."""
    return q < Quarter(2021, 4)
