"""``pipeline study``: the shipped Gastaldon 2021 recipe loads, and the machinery runs on synthetic curated tables
(the real comparison needs the real FAERS files): counts brute-forced, ROR against statsmodels, published values
carried beside ours, bad study files are one-line errors."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.analyses import brute

ROOT = Path(__file__).resolve().parents[2]
STUDY = """
[study]
name = "synthetic_check"
title = "machinery check on synthetic data"
doi = "none"
substance = "esketamine"
from_quarter = "2023Q3"
cutoff_quarter = ""
roles = ["PS", "SS"]
min_a = 3
pts = []
comparator = "esketamine_vs_venlafaxine"
published_n = 100

[[published]]
pt = "Dissociation"
ror = 50.0
ror_lo = 20.0
ror_hi = 120.0
ic = 3.0
ic025 = 2.0
ic975 = 4.0
"""


def test_shipped_recipe_loads():
    from pipeline.analyses.study import load_study

    doc = load_study(ROOT / "studies" / "gastaldon2021.toml")
    st = doc["study"]
    assert (st["substance"], st["from_quarter"], st["cutoff_quarter"], st["min_a"]) == ("esketamine", "2019Q1",
                                                                                       "2020Q1", 4)
    pub = {p["pt"]: p for p in doc["published"]}
    assert pub["Dissociation"]["ror"] == 1612.64 and pub["Dissociation"]["ic"] == 8.19
    assert pub["Sedation"]["ror_lo"] == 202.98 and pub["Completed suicide"]["ror_hi"] == 10.41
    assert {"Feeling drunk", "Suicidal ideation"} <= set(pub)


def _run_study(root, tmp_path, text: str):
    """``pipeline study`` on a copy of the fixture's curated tables; (data dir, finished process)."""
    data = tmp_path / "data"
    shutil.copytree(root / "curated", data / "curated")
    (tmp_path / "s.toml").write_text(text)
    proc = subprocess.run([sys.executable, "-m", "pipeline", "study", str(tmp_path / "s.toml"), "--data-dir",
                           str(data)], capture_output=True, text=True, cwd=ROOT)
    return data, proc


def test_study_on_synthetic_curated(analysed, config, tmp_path):
    from statsmodels.stats.contingency_tables import Table2x2

    root, rows, _ = analysed
    data, proc = _run_study(root, tmp_path, STUDY)
    assert proc.returncode == 0, proc.stderr
    assert "Dissociation" in proc.stdout and "published" in proc.stdout
    t = pd.read_parquet(data / "studies" / "synthetic_check" / "study.parquet")
    assert (data / "studies" / "synthetic_check" / "study.csv").exists()
    # brute force: reports first received 2023Q3 or later, in analysis
    pop = {rid for rid, q, ok in rows["reports"] if ok and q >= "2023Q3"}
    f = brute.Facts(rows, config)
    x = f.exposed("esketamine", reports=pop)
    for r in t.to_dict("records"):
        ev = {rid for (rid, pt, _), _ in f.pts.items() if pt == r["pt"]} & pop
        a = len(x & ev)
        assert (r["a"], r["b"], r["c"], r["d"]) == (a, len(x) - a, len(ev) - a, len(pop) - len(x) - len(ev) + a)
        assert r["a"] >= 3 or r["pt"] == "Dissociation"
        if min(r["a"], r["b"], r["c"], r["d"]) > 0:
            tt = Table2x2(np.array([[r["a"], r["b"]], [r["c"], r["d"]]], dtype=float))
            assert math.isclose(r["ror"], tt.oddsratio, rel_tol=1e-10)
    d = t[t["pt"] == "Dissociation"].iloc[0]
    assert d["published_ror"] == 50.0 and d["published_ic975"] == 4.0
    assert d["ror_ci_overlap"] == ("yes" if d["ror_lo"] <= 120 and 20 <= d["ror_hi"] else "no")
    # comparator columns: esketamine-only vs venlafaxine-only reports
    vx = {rid for rid, ing, _, role, _ in rows["ingredients"] if ing == "VENLAFAXINE" and role in ("PS", "SS")} & pop
    ev = {rid for (rid, pt, _), _ in f.pts.items() if pt == "Dissociation"}
    assert d["cmp_a"] == len((x - vx) & ev) and d["cmp_c"] == len((vx - x) & ev)


@pytest.mark.parametrize("text, needle", [
    ("[study]\nname = 1\n", "study.name"),
    ("nonsense = [", "not valid TOML"),
    (STUDY.replace('min_a = 3', 'min_a = 0'), "study.min_a"),
    (STUDY.replace('ror = 50.0', 'ror = "big"'), "'ror' must be a number"),
    (STUDY.replace('substance = "esketamine"', 'substance = "aspirin"'), "unknown substance"),
    (STUDY.replace('comparator = "esketamine_vs_venlafaxine"', 'comparator = "nope"'), "not a configured"),
])
def test_bad_study_file_is_one_line(analysed, tmp_path, text, needle):
    _, proc = _run_study(analysed[0], tmp_path, text)
    assert proc.returncode != 0
    assert needle in proc.stderr and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
