"""Canonical raw-table schemas: one Arrow schema per FAERS table, the same for every era.

Columns are selected from FDA's files *by normalised header name* (``strip().lower()``,
then :data:`HEADER_ALIASES`), never by position. Values are kept exactly as found, as
strings (an absent column is the empty string); a few *typed copies* are added where the
conversion is safe and needed downstream (integer keys, full dates). Every row also
carries its provenance: ``quarter``, ``era``, ``source_file`` and ``source_line`` (1-based
line number in the FDA text file, the header being line 1).

Sources: FDA ASC_NTS (Feb 2022) and the real 2004Q1/2012Q4/2017Q2/2020Q3 samples.
"""

from __future__ import annotations

import pyarrow as pa

#: canonical name <- variants seen in FDA headers (after strip().lower()).
HEADER_ALIASES: dict[str, str] = {
    "isr": "primaryid",
    "case": "caseid",
    "foll_seq": "caseversion",
    "i_f_cod": "i_f_code",
    "gndr_cod": "sex",
    "lot_nbr": "lot_num",
    "outc_code": "outc_cod",
}

#: Per table: THER/INDI call the drug sequence ``drug_seq`` in LAERS.
TABLE_ALIASES: dict[str, dict[str, str]] = {
    "THER": {"drug_seq": "dsg_drug_seq"},
    "INDI": {"drug_seq": "indi_drug_seq"},
}

#: Text columns of each table, in FDA's FAERS-B order, plus LAERS-only DEMO columns at the end.
TEXT_COLUMNS: dict[str, tuple[str, ...]] = {
    "DEMO": (
        "primaryid", "caseid", "caseversion", "i_f_code", "event_dt", "mfr_dt", "init_fda_dt", "fda_dt",
        "rept_cod", "auth_num", "mfr_num", "mfr_sndr", "lit_ref", "age", "age_cod", "age_grp", "sex", "e_sub",
        "wt", "wt_cod", "rept_dt", "to_mfr", "occp_cod", "reporter_country", "occr_country",
        "image", "death_dt", "confid",
    ),
    "DRUG": (
        "primaryid", "caseid", "drug_seq", "role_cod", "drugname", "prod_ai", "val_vbm", "route", "dose_vbm",
        "cum_dose_chr", "cum_dose_unit", "dechal", "rechal", "lot_num", "exp_dt", "nda_num", "dose_amt",
        "dose_unit", "dose_form", "dose_freq",
    ),
    "REAC": ("primaryid", "caseid", "pt", "drug_rec_act"),
    "OUTC": ("primaryid", "caseid", "outc_cod"),
    "RPSR": ("primaryid", "caseid", "rpsr_cod"),
    "THER": ("primaryid", "caseid", "dsg_drug_seq", "start_dt", "end_dt", "dur", "dur_cod"),
    "INDI": ("primaryid", "caseid", "indi_drug_seq", "indi_pt"),
    "DELETED": ("caseid",),
}

#: Columns a file must have (after aliasing) or it is refused as "wrong header".
REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "DEMO": ("primaryid", "caseid", "fda_dt"),
    "DRUG": ("primaryid", "drug_seq", "role_cod", "drugname"),
    "REAC": ("primaryid", "pt"),
    "OUTC": ("primaryid", "outc_cod"),
    "RPSR": ("primaryid", "rpsr_cod"),
    "THER": ("primaryid", "dsg_drug_seq"),
    "INDI": ("primaryid", "indi_drug_seq", "indi_pt"),
    "DELETED": ("caseid",),
}

#: Typed copies: name -> (source text column, arrow type). Integers are null when the
#: text is not a plain decimal number; dates are null unless the text is a full YYYYMMDD.
TYPED_COLUMNS: dict[str, dict[str, tuple[str, pa.DataType]]] = {
    "DEMO": {
        "primaryid_int": ("primaryid", pa.int64()),
        "caseid_int": ("caseid", pa.int64()),
        "caseversion_int": ("caseversion", pa.int64()),
        "fda_dt_date": ("fda_dt", pa.date32()),
        "init_fda_dt_date": ("init_fda_dt", pa.date32()),
        "event_dt_date": ("event_dt", pa.date32()),
    },
    "DRUG": {"primaryid_int": ("primaryid", pa.int64()), "caseid_int": ("caseid", pa.int64()),
             "drug_seq_int": ("drug_seq", pa.int64())},
    "REAC": {"primaryid_int": ("primaryid", pa.int64()), "caseid_int": ("caseid", pa.int64())},
    "OUTC": {"primaryid_int": ("primaryid", pa.int64()), "caseid_int": ("caseid", pa.int64())},
    "RPSR": {"primaryid_int": ("primaryid", pa.int64()), "caseid_int": ("caseid", pa.int64())},
    "THER": {"primaryid_int": ("primaryid", pa.int64()), "caseid_int": ("caseid", pa.int64()),
             "dsg_drug_seq_int": ("dsg_drug_seq", pa.int64())},
    "INDI": {"primaryid_int": ("primaryid", pa.int64()), "caseid_int": ("caseid", pa.int64()),
             "indi_drug_seq_int": ("indi_drug_seq", pa.int64())},
    "DELETED": {"caseid_int": ("caseid", pa.int64())},
}

#: Precision of partial FDA dates (YYYYMMDD / YYYYMM / YYYY): 'day', 'month', 'year' or null.
PRECISION_COLUMNS: dict[str, tuple[str, ...]] = {"DEMO": ("event_dt",)}

PROVENANCE_FIELDS: tuple[pa.Field, ...] = (
    pa.field("quarter", pa.string(), nullable=False),
    pa.field("era", pa.string(), nullable=False),
    pa.field("source_file", pa.string(), nullable=False),
    pa.field("source_line", pa.int64(), nullable=False),
)


def raw_schema(table: str) -> pa.Schema:
    """The exact Arrow schema of ``raw/<table>/quarter=*/part.parquet``."""
    fields = [pa.field(c, pa.string(), nullable=False) for c in TEXT_COLUMNS[table]]
    fields += [pa.field(name, typ) for name, (_, typ) in TYPED_COLUMNS[table].items()]
    fields += [pa.field(f"{c}_precision", pa.string()) for c in PRECISION_COLUMNS.get(table, ())]
    fields += list(PROVENANCE_FIELDS)
    return pa.schema(fields)


#: The quarantine table: one row per rejected line.
QUARANTINE_SCHEMA = pa.schema([
    pa.field("quarter", pa.string(), nullable=False),
    pa.field("table", pa.string(), nullable=False),
    pa.field("source_file", pa.string(), nullable=False),
    pa.field("line_number", pa.int64(), nullable=False),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("expected_fields", pa.int64(), nullable=False),
    pa.field("found_fields", pa.int64(), nullable=False),
    pa.field("raw", pa.binary(), nullable=False),
])
