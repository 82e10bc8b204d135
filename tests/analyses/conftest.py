"""One report built on the analyses fixture (once per session)."""

from __future__ import annotations

import pytest

from tests.analyses.fixture import make_analysis_curated


@pytest.fixture(scope="session")
def config():
    from pipeline.settings import load_config

    return load_config(None)


@pytest.fixture(scope="session")
def analysed(tmp_path_factory, config):
    from pathlib import Path

    from pipeline.reports import build_report

    root = tmp_path_factory.mktemp("analyses")
    rows = make_analysis_curated(root)
    result = build_report(root, config)
    return root, rows, Path(result["report_dir"])
