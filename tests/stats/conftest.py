"""Shared fixtures for the statistics-engine tests."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

REF = Path(__file__).resolve().parents[1] / "fixtures" / "reference"


def _f(x):
    return float(x)  # "inf"/"nan" strings parse too


@pytest.fixture(scope="session")
def ref_cases() -> list[dict]:
    data = json.loads((REF / "reference_2x2_cases.json").read_text())
    return data["cases"]


@pytest.fixture(scope="session")
def caers() -> pd.DataFrame:
    df = pd.read_csv(REF / "openEBGM_caers.csv", keep_default_na=False, dtype=str)
    return df.rename(columns={"id": "report_id", "var1": "drug", "var2": "event"})


@pytest.fixture(scope="session")
def caers_counts(caers):
    from pipeline.stats import count_pairs

    return count_pairs(caers[["report_id", "drug"]], caers[["report_id", "event"]])


@pytest.fixture(scope="session")
def pvda() -> pd.DataFrame:
    return pd.read_csv(REF / "pvda_drug_event_df.csv", keep_default_na=False)
