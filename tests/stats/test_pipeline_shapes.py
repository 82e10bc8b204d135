"""`pipeline run` end to end on data shapes the engine was not designed around: a quiet background (every
drug–event pair reported as expected, RR = 1) and a quiet background with a few strong signals (an MGPS optimum on
the boundary: a point-mass component at λ ≈ 1). The histories are written here, independently of
``pipeline sample``, in FDA's quarterly layout (follow-ups, a deleted case, blank sexes and ages)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.cli import main
from tests.support.fda import HEADERS_B, demo_row, write_zip

PTS = (["Dissociation", "Tachycardia", "Hypertension", "Nausea", "Headache", "Dizziness", "Somnolence", "Fatigue",
        "Vomiting", "Anxiety", "Insomnia", "Rash", "Pruritus", "Diarrhoea", "Pyrexia"]
       + [f"Made-up event {i}" for i in range(60)])
DRUGS = ([("KETAMINE HYDROCHLORIDE", "KETAMINE HYDROCHLORIDE"), ("SPRAVATO", "ESKETAMINE HYDROCHLORIDE")]
         + [(f"BRAND{i}", f"INGREDIENTUM{i}") for i in range(80)])


def write_history(folder, *, signals: bool, n_per_quarter: int = 1500, seed: int = 3):
    """Two quarters; Q2 holds follow-ups of some Q1 cases and deletes one. Events are drawn independently of
    drugs (RR = 1) unless ``signals``: then ketamine reports get Dissociation and ten drugs each get one PT far
    more often."""
    rng = np.random.default_rng(seed)
    p_drug = 1.0 / (np.arange(len(DRUGS)) + 3.0)
    p_drug /= p_drug.sum()
    p_pt = 1.0 / (np.arange(len(PTS)) + 2.0)
    p_pt /= p_pt.sum()
    special = {int(d): int(rng.integers(3, len(PTS))) for d in rng.choice(np.arange(2, len(DRUGS)), 10, replace=False)}
    case = 100_000
    cases = []
    for q, (yyqq, date) in enumerate((("24Q1", "20240215"), ("24Q2", "20240515"))):
        rows = {t: [] for t in HEADERS_B}
        todo = [(c, 2) for c in cases[: n_per_quarter // 10]] if q else []  # follow-ups of Q1 cases
        for _ in range(n_per_quarter):
            case += 1
            todo.append((case, 1))
            cases.append(case)
        for caseid, version in todo:
            pid = caseid * 10 + version
            sex = rng.choice(["F", "M", ""])
            age = "" if rng.random() < 0.2 else str(int(rng.integers(1, 95)))
            rows["DEMO"].append(demo_row(pid, caseid, version, fda_dt=date, init_fda_dt=date if version == 1 else
                                         "20240215", sex=sex, age=age, age_cod="YR" if age else ""))
            drugs = rng.choice(len(DRUGS), 1 + rng.poisson(0.7), p=p_drug)
            pts = set(rng.choice(len(PTS), 1 + rng.poisson(1.0), p=p_pt).tolist())
            if signals:
                for d in drugs:
                    if d == 0 and rng.random() < 0.6:
                        pts.add(0)
                    if int(d) in special and rng.random() < 0.5:
                        pts.add(special[int(d)])
            for seq, d in enumerate(drugs, start=1):
                name, ai = DRUGS[d]
                role = "PS" if seq == 1 else "SS"
                rows["DRUG"].append(f"{pid}${caseid}${seq}${role}${name}${ai}$1$Oral$$$$U$$$$$$$$")
                rows["THER"].append(f"{pid}${caseid}${seq}$$$$")
                rows["INDI"].append(f"{pid}${caseid}${seq}$Depression")
            for p in sorted(pts):
                rows["REAC"].append(f"{pid}${caseid}${PTS[p]}$")
            rows["OUTC"].append(f"{pid}${caseid}$OT")
            rows["RPSR"].append(f"{pid}${caseid}$HP")
        members = {f"ASCII/{t}{yyqq}.txt": ("\r\n".join([HEADERS_B[t], *r]) + "\r\n").encode() for t, r in rows.items()}
        members[f"Deleted/DELETE{yyqq}.txt"] = (f"{cases[5]}\r\n" if q else "").encode()
        write_zip(folder / f"faers_ascii_20{yyqq[:2]}q{yyqq[-1]}.zip", members)
    return folder


@pytest.mark.parametrize("signals", [False, True], ids=["quiet-background", "boundary-fit"])
def test_pipeline_run_publishes_ebgm_on_unplanned_shapes(tmp_path, signals, capsys):
    src = write_history(tmp_path / "mirror", signals=signals)
    data = tmp_path / "data"
    assert main(["--quiet", "run", "--source", str(src), "--data-dir", str(data)]) == 0
    report = data / "reports" / "latest"
    m = json.loads((report / "manifest.json").read_text())
    mg = m["mgps"]
    assert mg["published"] and m["validation"]["success"]
    # both shapes put the prior on the boundary (a point mass at λ ≈ 1): recorded, not hidden
    assert any("point mass" in b for b in mg["boundary"]), mg["boundary"]
    assert "point mass" in (report / "report.html").read_text()
    for name in ("signals", "all_pairs"):
        df = pd.read_parquet(report / f"{name}.parquet")
        for c in ("ebgm", "eb05", "eb95", "ebgm_crude", "eb05_crude"):
            assert np.isfinite(df[c]).all(), (name, c)
        assert (df["eb05"] <= df["eb95"]).all()
        assert m["mgps"]["ebgm_outside_eb05_eb95"][name] == int(
            ((df["ebgm"] < df["eb05"]) | (df["ebgm"] > df["eb95"])).sum())
    assert m["mgps"]["strata"]["columns"] == ["sex", "age_band", "receipt_year"]
    sig = pd.read_parquet(report / "signals.parquet")
    q = sig["fisher_q"].to_numpy()
    assert np.isnan(q[sig["a"].to_numpy() == 0]).all() and np.isfinite(q[sig["a"].to_numpy() >= 1]).all()
    if signals:  # the injected ketamine-dissociation effect stands out of the quiet background
        row = sig[(sig["substance"] == "ketamine") & (sig["pt"] == "Dissociation")].iloc[0]
        assert row["eb05"] > 2 and row["signal_ebgm"]
