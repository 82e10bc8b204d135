"""The expectation suites: where they live, how they are read, which columns they need.

Suites are plain JSON in the repository's ``expectations/`` folder, in the format GX itself writes
(``{"name", "meta", "expectations": [{"type", "kwargs", "severity", "meta"}]}``). A build copies them into the
package as ``pipeline/_suites/`` (see ``setup.py``), so an installed package finds them without the repository.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.quality.checks import CRITICAL, WARNING

_PACKAGE = Path(__file__).resolve().parents[1]  # pipeline/


def suites_dir() -> Path:
    """Where the suites are: ``$FAERS_EXPECTATIONS_DIR``, else the checkout's ``expectations/``, else the copy
    an installed package ships (``pipeline/_suites``)."""
    if os.environ.get("FAERS_EXPECTATIONS_DIR"):
        return Path(os.environ["FAERS_EXPECTATIONS_DIR"])
    checkout = _PACKAGE.parent / "expectations"
    return checkout if checkout.is_dir() else _PACKAGE / "_suites"


#: Where the suites live (see ``setup.py``: a build copies ``expectations/`` into the package).
EXPECTATIONS_DIR = suites_dir()


def load_suite(name: str) -> dict:
    """The suite ``expectations/<name>.json`` as a dict (GX's own JSON format)."""
    path = EXPECTATIONS_DIR / f"{name}.json"
    try:
        suite = json.loads(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"expectation suite {name!r} not found ({path})") from None
    except json.JSONDecodeError as exc:
        raise PipelineError(f"expectation suite {path} is not valid JSON: {exc}") from None
    for e in suite.get("expectations", []):
        if e.get("severity", CRITICAL) not in (CRITICAL, WARNING):
            raise PipelineError(f"{path}: severity must be 'critical' or 'warning', not {e.get('severity')!r}")
    return suite


def suite_columns(suite: dict) -> list[str]:
    """Columns the (non-structural) expectations of ``suite`` read."""
    cols: list[str] = []
    for e in suite["expectations"]:
        if e["type"].startswith("expect_table_columns"):
            continue
        kw = e["kwargs"]
        for key in ("column", "column_A", "column_B"):
            if key in kw and kw[key] not in cols:
                cols.append(kw[key])
        for c in kw.get("column_list", []):
            if c not in cols:
                cols.append(c)
    return cols


def split_structural(suite: dict) -> tuple[dict, dict]:
    """(data suite, column-set suite): table-structure expectations run on an empty frame of the schema."""
    structural = [e for e in suite["expectations"] if e["type"].startswith("expect_table_columns")]
    rest = [e for e in suite["expectations"] if not e["type"].startswith("expect_table_columns")]
    return ({**suite, "expectations": rest}, {**suite, "name": f"{suite['name']}.columns", "expectations": structural})


def raw_suite_name(table: str, era: str) -> str:
    """``raw_demo_faers_b``, ``raw_reac_faers``, ``raw_outc_laers``, ``raw_deleted`` ..."""
    family = "laers" if era == "laers" else "faers"
    for name in (f"raw_{table.lower()}_{era}", f"raw_{table.lower()}_{family}", f"raw_{table.lower()}"):
        if (EXPECTATIONS_DIR / f"{name}.json").exists():
            return name
    raise PipelineError(f"no expectation suite for raw {table} ({era}) in {EXPECTATIONS_DIR}")
