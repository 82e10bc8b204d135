"""Arrow schemas of the curated tables (``docs/CONTRACTS.md``, "Curated tables"). Every file written by
:func:`pipeline.curate.curate` is checked against these before it is moved into place."""

from __future__ import annotations

import pyarrow as pa

from pipeline.curate.linkage.review import REVIEW as DUP_REVIEW

REPORTS = pa.schema([
    ("report_id", pa.int64()), ("primaryid", pa.int64()), ("caseversion", pa.int64()), ("quarter", pa.string()),
    ("era", pa.string()), ("fda_dt", pa.date32()), ("init_fda_dt", pa.date32()), ("event_dt", pa.string()),
    ("age_years", pa.float64()), ("age_band", pa.string()), ("sex", pa.string()), ("reporter_country", pa.string()),
    ("occp_cod", pa.string()), ("receipt_year", pa.int32()), ("has_drug", pa.bool_()), ("has_pt", pa.bool_()),
    ("dup_group_id", pa.int64()), ("dup_rule", pa.string()),
    # highest linkage match probability to another member of the group (null: no scored pair inside the group)
    ("dup_score", pa.float64()), ("is_dup_kept", pa.bool_()), ("in_analysis", pa.bool_()),
    # first receipt: calendar quarter of init_fda_dt, else the first quarter a row of the case appears in
    ("first_quarter", pa.string()),
])

REPORT_INGREDIENTS = pa.schema([
    ("report_id", pa.int64()), ("ingredient", pa.string()), ("substance", pa.string()), ("role_cod", pa.string()),
    ("matched_by", pa.string()), ("is_exposure", pa.bool_()),
])

REPORT_PTS = pa.schema([
    ("report_id", pa.int64()), ("pt", pa.string()), ("pt_key", pa.string()), ("is_indication", pa.bool_()),
])

FUNNEL = pa.schema([
    ("step", pa.int64()), ("name", pa.string()), ("reports_in", pa.int64()), ("reports_out", pa.int64()),
    ("reason", pa.string()),
])

UNMAPPED_DRUGS = pa.schema([("drugname", pa.string()), ("n_rows", pa.int64()), ("n_reports", pa.int64())])

#: Kept drug rows whose drugname and prod_ai name different ketamine-family substances (or only the drugname does):
#: what each field names ('+'-joined, null = none), what was counted (``chosen``, from ``chosen_from``) and why.
NAME_CONFLICTS = pa.schema([
    ("report_id", pa.int64()), ("primaryid", pa.int64()), ("quarter", pa.string()), ("drug_seq", pa.int64()),
    ("role_cod", pa.string()), ("drugname", pa.string()), ("prod_ai", pa.string()),
    ("substance_from_drugname", pa.string()), ("substance_from_prod_ai", pa.string()), ("chosen", pa.string()),
    ("chosen_from", pa.string()), ("reason", pa.string()),
])

PT_GROUPS = pa.schema([("pt_group", pa.string()), ("pt", pa.string()), ("pt_key", pa.string())])

#: OUTC of the kept version: one row per (report, code); FDA codes DE, LT, HO, DS, CA, RI, OT.
REPORT_OUTCOMES = pa.schema([("report_id", pa.int64()), ("outc_cod", pa.string())])

#: Kept drug rows naming a ketamine-family substance: sequence, role and route (FDA text, trimmed; null = blank).
REPORT_SUBSTANCE_DRUGS = pa.schema([
    ("report_id", pa.int64()), ("drug_seq", pa.int64()), ("substance", pa.string()), ("role_cod", pa.string()),
    ("route", pa.string()),
])

#: INDI of the kept version: the indication PT of drug ``drug_seq`` (= indi_drug_seq) of the report.
REPORT_INDICATIONS = pa.schema([("report_id", pa.int64()), ("drug_seq", pa.int64()), ("pt", pa.string()),
                                ("pt_key", pa.string())])

#: THER rows of the kept version linked to a family drug row; start_date only for a full, valid YYYYMMDD.
REPORT_THERAPIES = pa.schema([("report_id", pa.int64()), ("drug_seq", pa.int64()), ("start_dt", pa.string()),
                              ("start_date", pa.date32())])

CURATED = {
    "reports": REPORTS,
    "report_ingredients": REPORT_INGREDIENTS,
    "report_pts": REPORT_PTS,
    "funnel": FUNNEL,
    "unmapped_drugs": UNMAPPED_DRUGS,
    "name_conflicts": NAME_CONFLICTS,
    "dup_review": DUP_REVIEW,
    "report_outcomes": REPORT_OUTCOMES,
    "report_substance_drugs": REPORT_SUBSTANCE_DRUGS,
    "report_indications": REPORT_INDICATIONS,
    "report_therapies": REPORT_THERAPIES,
}
