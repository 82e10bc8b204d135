"""Fixtures of the report tests: hand-made curated tables and one report built from them (once per session)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.reports.curated_fixture import make_curated


@pytest.fixture(scope="session")
def config():
    from pipeline.settings import load_config

    return load_config(None)


@pytest.fixture(scope="session")
def curated(tmp_path_factory):
    """A data dir with curated tables only (synthetic marker zip in landing/)."""
    root = tmp_path_factory.mktemp("curated")
    rows = make_curated(root, synthetic_zip=True)
    return root, rows


@pytest.fixture(scope="session")
def built(curated, config, tmp_path_factory):
    """A data dir (copy of ``curated``) with one report built; returns (root, rows, result)."""
    from pipeline.reports import build_report

    src, rows = curated
    root = tmp_path_factory.mktemp("built")
    shutil.copytree(src, root, dirs_exist_ok=True)
    result = build_report(root, config)
    return root, rows, result


@pytest.fixture
def fresh(curated, tmp_path):
    """A private copy of the curated data dir (for tests that build more reports)."""
    src, rows = curated
    shutil.copytree(src, tmp_path / "data")
    return tmp_path / "data", rows


def report_dir(result) -> Path:
    return Path(result["report_dir"])
