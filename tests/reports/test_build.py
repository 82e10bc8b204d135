"""The report folder: files, Parquet schema and metadata, one row per key, numbers = engine(brute-force counts)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.reports.conftest import report_dir
from tests.reports.curated_fixture import brute_counts

FILES = ("signals.parquet", "all_pairs.parquet", "funnel.parquet", "trend.parquet", "manifest.json", "report.html")
STATS = ["substance", "pt", "pt_group", "a", "b", "c", "d", "n_total", "expected", "prr", "prr_lo", "prr_hi", "chi2",
         "chi2_yates", "ror", "ror_lo", "ror_hi", "ic", "ic025", "ic975", "ebgm", "eb05", "eb95", "fisher_p",
         "fisher_midp", "signal_prr", "signal_ror", "signal_ic", "signal_ebgm"]
FLOATS = ["expected", "prr", "prr_lo", "prr_hi", "chi2", "chi2_yates", "ror", "ror_lo", "ror_hi", "ic", "ic025",
          "ic975", "ebgm", "eb05", "eb95", "fisher_p", "fisher_midp"]
FLAGS = ["signal_prr", "signal_ror", "signal_ic", "signal_ebgm"]


def _groups(config, names=None):
    return {g.name: list(g.pts) for g in config.pt_groups if names is None or g.name in names}


def _manifest(d: Path) -> dict:
    return json.loads((d / "manifest.json").read_text())


def test_folder_and_latest(built):
    root, _, result = built
    d = report_dir(result)
    assert set(result) >= {"report_dir", "run_id", "changed", "focus"}
    assert result["changed"] is True and d.name == result["run_id"]
    for f in FILES:
        assert (d / f).is_file(), f
    latest = root / "reports" / "latest"
    assert latest.is_symlink() and latest.resolve() == d.resolve()
    assert (root / "reports" / "LATEST").read_text().strip() == result["run_id"]
    assert not (root / ".reports-staging").exists()
    from pipeline.layout import DataDir
    from pipeline.runner import latest_report

    assert latest_report(DataDir(root)) == d.resolve()


@pytest.mark.parametrize("name", ["signals", "all_pairs", "trend"])
def test_parquet_schema_and_metadata(built, name):
    _, _, result = built
    d = report_dir(result)
    m = _manifest(d)
    path = d / f"{name}.parquet"
    schema = pq.read_schema(path)
    cols = (["quarter"] if name == "trend" else []) + STATS
    assert schema.names[:len(cols)] == cols
    for c in ("substance", "pt", "pt_group") + (("quarter",) if name == "trend" else ()):
        assert pa.types.is_dictionary(schema.field(c).type), c
        assert schema.field(c).type.value_type == pa.string()
    for c in ("a", "b", "c", "d", "n_total", "n_drug", "n_event") + (("a_indication",) if name == "signals" else ()):
        assert schema.field(c).type == pa.int64(), c
    for c in FLOATS:
        assert schema.field(c).type == pa.float64(), c
    for c in FLAGS:
        assert schema.field(c).type == pa.bool_(), c
    meta = {k.decode(): v.decode() for k, v in schema.metadata.items()}
    assert meta["faers.run_id"] == m["run_id"] == result["run_id"]
    assert meta["faers.data_cutoff"] == m["data_cutoff"]
    assert meta["faers.config_sha256"] == m["config"]["sha256"]
    md = pq.ParquetFile(path).metadata
    assert md.num_rows == m["counts"]["rows"][name]
    assert {md.row_group(0).column(i).compression for i in range(md.num_columns)} == {"ZSTD"}
    # pandas reads the same
    df = pd.read_parquet(path)
    assert len(df) == md.num_rows
    assert df["a"].dtype == np.int64 and df["ror"].dtype == np.float64 and df["signal_ror"].dtype == bool


def test_signals_one_row_per_key_and_full_grid(built, config):
    _, rows, result = built
    sig = pd.read_parquet(report_dir(result) / "signals.parquet")
    pt_rows, g_rows = sig[sig["pt"].notna()], sig[sig["pt_group"].notna()]
    assert len(pt_rows) + len(g_rows) == len(sig), "exactly one of pt / pt_group is set"
    assert not sig[["substance", "pt"]][sig["pt"].notna()].duplicated().any()
    assert not g_rows[["substance", "pt_group"]].duplicated().any()
    subs = ["ketamine", "esketamine", "arketamine", "norketamine", "ketamine_family"]
    assert list(dict.fromkeys(sig["substance"].astype(str))) == subs
    pop = {rid for rid, q, ok in rows["reports"] if ok}
    all_pts = {pt for rid, pt, _, _ in rows["pts"] if rid in pop}
    for s in subs:
        assert set(pt_rows.loc[pt_rows["substance"] == s, "pt"].astype(str)) == all_pts
        assert list(g_rows.loc[g_rows["substance"] == s, "pt_group"].astype(str)) == [g.name for g in config.pt_groups]
    # arketamine is absent from the fixture: its rows exist with a = 0 and n_drug = 0
    ark = sig[sig["substance"] == "arketamine"]
    assert (ark["a"] == 0).all() and (ark["n_drug"] == 0).all()


def test_signals_equal_engine_on_brute_force_counts(built, config):
    """Every count equals a plain-python count of the curated rows; every statistic equals the engine's output
    for those counts with the manifest's MGPS prior."""
    from pipeline.stats import MgpsFit, disproportionality

    _, rows, result = built
    d = report_dir(result)
    m = _manifest(d)
    sig = pd.read_parquet(d / "signals.parquet")
    for c in ("substance", "pt", "pt_group"):
        sig[c] = sig[c].astype(object).where(sig[c].notna(), None)
    brute = brute_counts(rows, _groups(config))
    recs = []
    for (s, (kind, name)), (a, n_drug, n_event, n_total) in brute.items():
        recs.append({"drug": s, "event": ("G:" if kind == "group" else "P:") + name, "a": a, "n_drug": n_drug,
                     "n_event": n_event, "n_total": n_total})
    counts = pd.DataFrame(recs)
    assert len(counts) == len(sig)
    # crude columns: the engine on the brute-force counts with the crude-E prior; the main EBGM columns: the
    # stratified-E prior at the report's stratified E (stratified E itself is brute-forced in tests/stats)
    fit = MgpsFit.from_dict(m["mgps"])
    crude = MgpsFit.from_dict(m["mgps"]["crude"]) if m["mgps"].get("crude") else fit
    exp, _ = disproportionality(counts, confidence_level=config.confidence_level,
                                thresholds=config.thresholds, mgps_fit=crude,
                                mgps_likelihood=m["mgps"]["likelihood"])
    for c in ("ebgm", "eb05", "eb95"):
        exp[f"{c}_crude"] = exp[c]
    exp["substance"] = exp["drug"]
    exp["pt"] = [e[2:] if e.startswith("P:") else None for e in exp["event"]]
    exp["pt_group"] = [e[2:] if e.startswith("G:") else None for e in exp["event"]]
    key = lambda df: df["substance"] + "|" + df["pt"].fillna("") + "|" + df["pt_group"].fillna("")  # noqa
    got = sig.set_index(key(sig)).sort_index()
    want = exp.set_index(key(exp)).sort_index()
    assert list(got.index) == list(want.index)
    post = fit.posterior(got["a"].to_numpy(), got["expected_strat"].to_numpy())
    for c in ("ebgm", "eb05", "eb95"):
        want[c] = post[c]
    want["signal_ebgm"] = (want["eb05"] >= config.thresholds.eb05_min) & (want["a"] >= config.thresholds.ebgm_min_a)
    for c in ("ebgm_crude", "eb05_crude", "eb95_crude"):
        np.testing.assert_allclose(got[c].to_numpy(), want[c].to_numpy(), rtol=1e-12, equal_nan=True, err_msg=c)
    for c in ("a", "b", "c", "d", "n_total", "n_drug", "n_event"):
        np.testing.assert_array_equal(got[c].to_numpy(), want[c].to_numpy(), err_msg=c)
    for c in FLOATS:
        np.testing.assert_allclose(got[c].to_numpy(), want[c].to_numpy(), rtol=1e-12, atol=0, equal_nan=True,
                                   err_msg=c)
    for c in FLAGS:
        np.testing.assert_array_equal(got[c].to_numpy(), want[c].to_numpy(), err_msg=c)
    # a_indication: reports with the pair where the PT (a group PT) is also an indication of the report
    pop = {rid for rid, q, ok in rows["reports"] if ok}
    ind = {}
    for rid, pt, key, is_ind in rows["pts"]:
        if rid in pop and is_ind:
            ind.setdefault(rid, set()).add(key)
    exposed = {}
    for rid, ing, sub, role, _ in rows["ingredients"]:
        if rid in pop and sub and role in config.exposure_roles:
            exposed.setdefault(sub, set()).add(rid)
            exposed.setdefault("ketamine_family", set()).add(rid)
    groups = {g: {p.lower() for p in pts} for g, pts in _groups(config).items()}
    for r in got.itertuples():
        reps = exposed.get(r.substance, set())
        keys = {r.pt.lower()} if r.pt else groups[r.pt_group]
        assert r.a_indication == sum(1 for rid in reps if ind.get(rid, set()) & keys), (r.substance, r.pt, r.pt_group)
    assert got["a_indication"].sum() > 0
    # the injected effect is visible: esketamine x dissociation is flagged
    row = got.loc["esketamine||dissociation"]
    assert row["a"] >= 3 and row["ror_lo"] > 1 and row["signal_ror"]


def test_all_pairs_is_the_background(built, config):
    _, rows, result = built
    d = report_dir(result)
    ap = pd.read_parquet(d / "all_pairs.parquet")
    assert ap["pt_group"].isna().all() and (ap["a"] >= 1).all()
    assert not ap[["substance", "pt"]].duplicated().any()
    pop = {rid for rid, q, ok in rows["reports"] if ok}
    exp: dict[str, set] = {}
    for rid, ing, sub, role, _ in rows["ingredients"]:
        if rid in pop and role in config.exposure_roles:
            exp.setdefault(ing, set()).add(rid)
    ev: dict[str, set] = {}
    for rid, pt, _, _ in rows["pts"]:
        if rid in pop:
            ev.setdefault(pt, set()).add(rid)
    pairs = {(i, p): len(r & e) for i, r in exp.items() for p, e in ev.items() if r & e}
    assert len(ap) == len(pairs)
    got = {(str(s), str(p)): int(a) for s, p, a in ap[["substance", "pt"]].assign(a=ap["a"]).itertuples(index=False)}
    assert got == pairs
    assert (ap["n_total"] == len(pop)).all()
    m = _manifest(d)
    assert m["mgps"]["n_cells"] == len(pairs) or m["mgps"]["likelihood"] != "openebgm"


def test_manifest_consistency(built, config):
    root, rows, result = built
    d = report_dir(result)
    m = _manifest(d)
    assert m["run_id"] == result["run_id"]
    assert m["config"]["sha256"] == config.sha256
    assert m["data_cutoff"] == "2024Q4" and m["quarters"][0] == "2023Q1"
    pop = {rid for rid, q, ok in rows["reports"] if ok}
    assert m["counts"]["analysis_population"] == len(pop)
    sig = pd.read_parquet(d / "signals.parquet")
    fam = {rid for rid, ing, sub, role, _ in rows["ingredients"] if rid in pop and sub and role in ("PS", "SS")}
    assert m["counts"]["exposed_reports"]["ketamine_family"] == len(fam)
    assert m["counts"]["signals_flagged"]["signal_ror"] == int(sig["signal_ror"].sum())
    for name, info in m["files"].items():
        assert hashlib.sha256((d / name).read_bytes()).hexdigest() == info["sha256"], name
    assert set(m["files"]) >= set(FILES) - {"manifest.json"}
    assert len(m["inputs"]["ingest"]) == 8 and all(len(r["zip_sha256"]) == 64 for r in m["inputs"]["ingest"])
    assert m["inputs"]["curated_manifest_sha256"] == hashlib.sha256(
        (root / "curated" / "manifest.json").read_bytes()).hexdigest()
    assert m["synthetic"] is True
    assert m["role_rule"]["exposure_roles"] == ["PS", "SS"]
    assert {"theta", "neg_loglik", "converged", "likelihood", "warnings"} <= set(m["mgps"])
    assert {"numpy", "pandas", "pyarrow", "scipy", "python"} <= set(m["package_versions"])
    assert "validation" in m
    assert m["parameters"]["mgps_likelihood"] == config.mgps_likelihood


def test_funnel(built):
    _, _, result = built
    d = report_dir(result)
    f = pd.read_parquet(d / "funnel.parquet")
    assert list(f.columns) == ["step", "stage", "name", "reports_in", "reports_out", "reason"]
    assert f["step"].is_monotonic_increasing and f["step"].dtype == np.int64
    assert set(f["stage"].astype(str)) == {"curate", "report"}
    m = _manifest(d)
    last = f[f["name"] == "data cut-off"].iloc[0]
    assert last["reports_out"] == m["counts"]["analysis_population"]


def test_trend_cumulative_and_ends_at_signals(built, config):
    _, rows, result = built
    d = report_dir(result)
    tr = pd.read_parquet(d / "trend.parquet")
    sig = pd.read_parquet(d / "signals.parquet")
    for c in ("substance", "pt", "pt_group", "quarter"):
        tr[c] = tr[c].astype(object).where(tr[c].notna(), None)
    for c in ("substance", "pt", "pt_group"):
        sig[c] = sig[c].astype(object).where(sig[c].notna(), None)
    assert sorted(tr["quarter"].unique()) == _manifest(d)["quarters"]
    key = ["substance", "pt", "pt_group"]
    assert not tr[key + ["quarter"]].fillna("").duplicated().any()
    for _, g in tr.sort_values("quarter").groupby([tr[k].fillna("") for k in key]):
        for c in ("a", "n_drug", "n_event", "n_total"):
            assert g[c].is_monotonic_increasing
    last = tr[tr["quarter"] == "2024Q4"].merge(sig, on=key, suffixes=("", "_s"))
    assert len(last) == len(tr[tr["quarter"] == "2024Q4"])
    for c in ("a", "b", "c", "d", "n_total"):
        np.testing.assert_array_equal(last[c], last[c + "_s"])
    np.testing.assert_allclose(last["ror_lo"], last["ror_lo_s"], rtol=1e-12, equal_nan=True)
    # a mid quarter equals a brute-force count restricted to quarters <= it
    brute = brute_counts(rows, _groups(config), cutoff="2023Q3")
    mid = tr[(tr["quarter"] == "2023Q3") & tr["pt_group"].notna()]
    for r in mid.itertuples():
        assert (r.a, r.n_drug, r.n_event, r.n_total) == brute[(r.substance, ("group", r.pt_group))]
    # every focus substance x every PT group is in the trend
    groups = tr[tr["pt_group"].notna()][["substance", "pt_group"]].drop_duplicates()
    assert len(groups) == 5 * len(config.pt_groups)


def test_cutoff_and_overrides(fresh, config):
    from pipeline.reports import build_report

    root, rows = fresh
    res = build_report(root, config, from_quarter="2023Q4", substances=["esketamine", "ketamine_family"],
                       pt_groups="dissociation,hypertension", roles=["PS"], mgps_likelihood="conditional")
    d = report_dir(res)
    m = _manifest(d)
    assert m["data_cutoff"] == "2024Q4" and m["quarters"][0] == "2023Q4"
    assert m["parameters"] == {"substances": ["esketamine", "ketamine_family"],
                               "pt_groups": ["dissociation", "hypertension"], "roles": ["PS"],
                               "mgps_likelihood": "conditional", "cutoff_quarter": None, "from_quarter": "2023Q4",
                               "trend_top_pts": 5}
    assert m["dating"]["from_quarter"] == "2023Q4" and m["dating"]["cutoff_quarter"] is None
    assert m["mgps"]["likelihood"] == "conditional"
    sig = pd.read_parquet(d / "signals.parquet")
    assert set(sig["substance"].astype(str)) == {"esketamine", "ketamine_family"}
    assert set(sig["pt_group"].dropna().astype(str)) == {"dissociation", "hypertension"}
    brute = brute_counts(rows, _groups(config, ["dissociation", "hypertension"]), roles=("PS",),
                         from_quarter="2023Q4", substances=("esketamine", "ketamine_family"))
    g = sig[sig["pt_group"].notna()]
    for r in g.itertuples():
        assert (r.a, r.n_drug, r.n_event, r.n_total) == brute[(str(r.substance), ("group", str(r.pt_group)))]
    assert pq.read_schema(d / "signals.parquet").metadata[b"faers.data_cutoff"] == b"2024Q4"


def test_bad_parameters(fresh, config):
    from pipeline.errors import PipelineError
    from pipeline.reports import build_report

    root, _ = fresh
    with pytest.raises(PipelineError, match="unknown substance"):
        build_report(root, config, substances=["ketorolac"])
    with pytest.raises(PipelineError, match="unknown PT group"):
        build_report(root, config, pt_groups=["nope"])
    with pytest.raises(PipelineError, match="likelihood"):
        build_report(root, config, mgps_likelihood="nope")
    with pytest.raises(PipelineError, match="not a quarter"):
        build_report(root, config, cutoff_quarter="2024-3")
    with pytest.raises(PipelineError, match="raw tables"):  # a cut-off rebuilds the database from DIR/raw
        build_report(root, config, cutoff_quarter="2020Q1")
    with pytest.raises(PipelineError, match="not a quarter"):
        build_report(root, config, from_quarter="2024-3")
    with pytest.raises(PipelineError, match="after --cutoff-quarter"):
        build_report(root, config, from_quarter="2024Q3", cutoff_quarter="2024Q1")
    with pytest.raises(PipelineError, match="empty"):
        build_report(root, config, from_quarter="2031Q1")
    with pytest.raises(PipelineError, match="curate"):
        build_report(root / "nowhere", config)
    assert not (root / "reports").exists() or not any((root / "reports").iterdir())


def test_unchanged_inputs_skip_then_force_moves_latest(fresh, config):
    from pipeline.reports import build_report

    root, _ = fresh
    first = build_report(root, config)
    again = build_report(root, config)
    assert again["changed"] is False and again["run_id"] == first["run_id"]
    assert again["focus"] == first["focus"]
    second = build_report(root, config, force=True)
    assert second["changed"] is True and second["run_id"] != first["run_id"]
    latest = root / "reports" / "latest"
    assert latest.resolve() == Path(second["report_dir"]).resolve()
    assert (root / "reports" / "LATEST").read_text().strip() == second["run_id"]
    assert Path(first["report_dir"]).is_dir()  # the older report is kept


def test_failure_mid_build_leaves_previous_report(fresh, config, monkeypatch):
    from pipeline.reports import build_report
    from pipeline.reports import html as html_mod

    root, _ = fresh
    first = build_report(root, config)
    before = sorted(p.name for p in (root / "reports").iterdir())
    link_before = os.readlink(root / "reports" / "latest")

    def boom(**kwargs):
        raise RuntimeError("disk full while rendering")

    monkeypatch.setattr(html_mod, "render_report", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        build_report(root, config, force=True)
    assert sorted(p.name for p in (root / "reports").iterdir()) == before
    assert os.readlink(root / "reports" / "latest") == link_before
    assert (root / "reports" / "LATEST").read_text().strip() == first["run_id"]
    assert not (root / ".reports-staging").exists()
    for f in FILES:
        assert (Path(first["report_dir"]) / f).exists()


def test_validation_failure_aborts(fresh, config, monkeypatch):
    """A critical output check (quality.validate_outputs raising ValidationFailed) publishes nothing."""
    from pipeline import quality
    from pipeline.reports import build_report

    root, _ = fresh
    seen = {}

    def failing(report_dir, signals, all_pairs, mgps, config):
        seen["name"] = Path(report_dir).name
        seen["cols"] = list(signals.columns)
        raise quality.ValidationFailed("outputs: signals: a >= 0 failed (test)", {})

    monkeypatch.setattr(quality, "validate_outputs", failing, raising=False)
    with pytest.raises(quality.ValidationFailed):
        build_report(root, config)
    assert not (root / "reports" / "latest").exists()
    assert seen["cols"][:3] == ["substance", "pt", "pt_group"]
    assert len(seen["name"]) > 16  # validated in a folder already named by the run id


def test_latest_falls_back_to_text_file_without_symlinks(fresh, config, monkeypatch):
    from pipeline.layout import DataDir
    from pipeline.reports import build_report, latest_report_dir
    from pipeline.runner import latest_report

    root, _ = fresh
    first = build_report(root, config)
    assert (root / "reports" / "latest").is_symlink()

    def no_symlinks(*a, **k):
        raise OSError(95, "Operation not supported")

    monkeypatch.setattr(os, "symlink", no_symlinks)
    second = build_report(root, config, force=True)
    assert not (root / "reports" / "latest").exists()  # the stale link is gone, LATEST decides
    assert (root / "reports" / "LATEST").read_text().strip() == second["run_id"] != first["run_id"]
    assert latest_report(DataDir(root)) == Path(second["report_dir"])
    assert latest_report_dir(root) == Path(second["report_dir"])


def test_detect_synthetic(tmp_path):
    import zipfile

    from pipeline.layout import DataDir
    from pipeline.reports.manifest import detect_synthetic

    dd = DataDir(tmp_path / "data")
    (dd.landing).mkdir(parents=True)
    rec = [{"quarter": "2024Q1", "zip": "faers_ascii_2024q1.zip"}]
    with zipfile.ZipFile(dd.landing / "faers_ascii_2024q1.zip", "w") as zf:
        zf.writestr("Readme.pdf", b"%PDF")  # FDA's zips: no README.txt
    assert detect_synthetic(dd, rec)["synthetic"] is False
    with zipfile.ZipFile(dd.landing / "faers_ascii_2024q1.zip", "w") as zf:
        zf.writestr("README.txt", b"SYNTHETIC DATA - NOT FDA FAERS DATA.\r\n")
    assert detect_synthetic(dd, rec)["synthetic"] is True
    (dd.landing / "faers_ascii_2024q1.zip").unlink()
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (dd.landing_manifest).write_text(json.dumps({"files": {"faers_ascii_2024q1.zip": {
        "url": (mirror / "faers_ascii_2024q1.zip").as_uri()}}}))
    assert detect_synthetic(dd, rec)["synthetic"] is False
    (mirror / "truth.json").write_text(json.dumps({"synthetic": True}))
    got = detect_synthetic(dd, rec)
    assert got["synthetic"] is True and "truth.json" in got["evidence"][0]
