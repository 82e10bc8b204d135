"""Outputs: the statistics tables of a report (signals, all pairs) and the MGPS fit.

Writes ``<report_dir>/validation.json`` and ``DIR/validation/outputs/<run_id>.json``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.layout import DataDir
from pipeline.quality.checks import Check, finish
from pipeline.quality.gx import GxRun, checks_from_result, data_docs_enabled
from pipeline.quality.suites import load_suite, split_structural

_CI_GAPS = {  # derived column: (upper, lower) -> upper - lower >= -tolerance where both are finite
    "prr_minus_prr_lo": ("prr", "prr_lo"), "prr_hi_minus_prr": ("prr_hi", "prr"),
    "ror_minus_ror_lo": ("ror", "ror_lo"), "ror_hi_minus_ror": ("ror_hi", "ror"),
    "ic_minus_ic025": ("ic", "ic025"), "ic975_minus_ic": ("ic975", "ic"),
    "ebgm_minus_eb05": ("ebgm", "eb05"), "eb95_minus_ebgm": ("eb95", "ebgm"),  # warnings: EBGM is no quantile
    "eb95_minus_eb05": ("eb95", "eb05"), "eb95_crude_minus_eb05_crude": ("eb95_crude", "eb05_crude"),
}


def signal_rules(config=None, thresholds: dict | None = None) -> dict:
    """The flag thresholds to recompute: the rules' defaults <- config ``[thresholds]`` <- ``thresholds``.

    ``config``: a Config, or a mapping holding a ``[thresholds]`` table (config key names); ``None`` with no
    ``thresholds`` reads the shipped config. ``thresholds``: field names, as a manifest records them.
    """
    from pipeline.stats.rules import Thresholds

    if config is None and thresholds is None:
        try:
            from pipeline.settings import load_config

            config = load_config(None)
        except Exception:  # noqa: BLE001 - the shipped config is optional here
            config = None
    rules = Thresholds()
    if isinstance(config, dict):
        rules = Thresholds.from_config(config.get("thresholds", config))
    elif config is not None:
        rules = config.thresholds
    return rules.replace(thresholds).as_dict()


def outputs_frame(df, keys: list[str], rules: dict):
    """The statistics columns the suite reads plus the derived check columns (NaN/inf where undefined)."""
    import pandas as pd

    cols = [c for c in df.columns if c in set(keys) | {
        "a", "b", "c", "d", "n_total", "expected", "prr", "prr_lo", "prr_hi", "chi2", "chi2_yates", "ror", "ror_lo",
        "ror_hi", "ic", "ic025", "ic975", "ebgm", "eb05", "eb95", "fisher_p", "fisher_midp",
        "signal_prr", "signal_ror", "signal_ic", "signal_ebgm"}]
    out = df[cols].copy()
    def num(c: str) -> np.ndarray:
        if c not in df:
            return np.full(len(df), np.nan)
        return pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float)

    a, b, c, d = num("a"), num("b"), num("c"), num("d")
    out["a_max"] = np.minimum(a + b, a + c)
    out["abcd_sum"] = a + b + c + d
    with np.errstate(invalid="ignore"):
        for name, (hi, lo) in _CI_GAPS.items():
            x, y = num(hi), num(lo)
            out[name] = np.where(np.isfinite(x) & np.isfinite(y), x - y, np.nan)
        ok = lambda v: np.nan_to_num(v, nan=-np.inf)  # NaN never raises a flag  # noqa: E731
        out["signal_prr_expected"] = ((a >= rules["prr_min_a"]) & (ok(num("prr")) >= rules["prr_min"])
                                      & (ok(num("chi2_yates")) >= rules["chi2_yates_min"]))
        out["signal_ror_expected"] = (a >= rules["ror_min_a"]) & (ok(num("ror_lo")) > rules["ror_lo_min"])
        out["signal_ic_expected"] = ok(num("ic025")) > rules["ic025_min"]
        out["signal_ebgm_expected"] = (ok(num("eb05")) >= rules["eb05_min"]) & (a >= rules["ebgm_min_a"])
    for s in ("prr", "ror", "ic", "ebgm"):
        if f"signal_{s}" in out:
            out[f"signal_{s}"] = out[f"signal_{s}"].astype(bool)
    return out


def _data_root_of_report(report_dir: Path) -> Path | None:
    """``DIR`` for ``DIR/reports/<run>`` or the staging ``DIR/.reports-staging/<run>``."""
    if report_dir.parent.name in ("reports", ".reports-staging"):
        return report_dir.parent.parent
    return None


def validate_outputs(report_dir: str | os.PathLike, signals, all_pairs, mgps: dict | None, config=None, *,
                     thresholds: dict | None = None, ci_tolerance: float = 1e-9, data_docs: bool | None = None,
                     docs_dir: str | os.PathLike | None = None, raise_on_critical: bool = True) -> dict:
    """Validate the statistics of a report; write ``<report_dir>/validation.json`` (and
    ``DIR/validation/outputs/<run_id>.json``); raise on critical failures.

    Critical (structural invariants and identities only): a, b, c, d >= 0; a <= min(n_drug, n_event);
    a+b+c+d = n_total; lower <= point <= upper for PRR, ROR and IC and EB05 <= EB95, on rows where both are finite
    (NaN/inf are legitimate); probabilities in [0, 1]; the four signal flags equal their recomputation from the
    thresholds (``config`` [thresholds], or the shipped default config, overridden by ``thresholds``); MGPS
    hyperparameters finite and positive when ``mgps`` has a ``theta``. Warnings: EBGM outside [EB05, EB95] (a
    geometric mean of a mixture posterior can lie there), MGPS optimiser without convergence message, no
    agreeing start, no prior fitted.
    """
    import pandas as pd

    report_dir = Path(report_dir)
    run_id = report_dir.name
    root = _data_root_of_report(report_dir)
    rules = signal_rules(config, thresholds)
    t0 = time.perf_counter()
    if docs_dir is None and root is not None:
        docs_dir = DataDir(root).validation / "data_docs"
    gxr = GxRun(Path(docs_dir) if docs_dir is not None else None, render=data_docs_enabled(data_docs, default=False))
    checks: list[Check] = []
    params = {"ci_tolerance": -abs(ci_tolerance)}
    for name, df in (("signals", signals), ("all_pairs", all_pairs)):
        if df is None:
            continue
        if isinstance(df, pa.Table):
            df = df.to_pandas()
        suite = _outputs_suite_for(load_suite(f"outputs_{name}"), df)
        keys = [k for k in ("substance", "drug", "pt", "event", "pt_group") if k in df.columns]
        frame = outputs_frame(df, keys, rules)
        data_suite, col_suite = split_structural(suite)
        res = gxr.run(data_suite, frame, asset=f"outputs_{name}", params=params, run_name=run_id,
                      index_columns=keys or None)
        checks += checks_from_result(res, layer="outputs", table=name, scope=run_id, suite=data_suite)
        res = gxr.run(col_suite, df.head(0), asset=f"outputs_{name}_columns", params={}, run_name=run_id,
                      persist=False)
        checks += checks_from_result(res, layer="outputs", table=name, scope=run_id, suite=col_suite)
    theta = (mgps or {}).get("theta") if isinstance(mgps, dict) else None
    if theta:
        row = {k: theta.get(k, np.nan) for k in ("alpha1", "beta1", "alpha2", "beta2", "p")}
        row["neg_loglik"] = mgps.get("neg_loglik", np.nan)
        row["converged"] = bool(mgps.get("converged", False))
        row["published"] = bool(mgps.get("published", all(v is not None for v in theta.values())))
        row["agreement"] = mgps.get("agreement") is not False  # None: not assessed (no second start to compare)
        df = pd.DataFrame([row]).astype({k: float for k in ("alpha1", "beta1", "alpha2", "beta2", "p", "neg_loglik")})
        suite = load_suite("outputs_mgps")
        res = gxr.run(suite, df, asset="outputs_mgps", params={}, run_name=run_id)
        checks += checks_from_result(res, layer="outputs", table="mgps", scope=run_id, suite=suite)
    timings = {"validation": round(time.perf_counter() - t0, 3)}
    extra = {"run_id": run_id, "rows": {"signals": None if signals is None else len(signals),
                                        "all_pairs": None if all_pairs is None else len(all_pairs)},
             "thresholds": {**rules, "ci_tolerance": ci_tolerance}}
    also = [DataDir(root).validation / "outputs" / f"{run_id}.json"] if root is not None else []
    return finish("outputs", run_id, checks, report_dir / "validation.json", extra=extra, gxr=gxr,
                   timings=timings, raise_on_critical=raise_on_critical, also_write=also)


def _outputs_suite_for(suite: dict, df) -> dict:
    """Key columns are ``substance``/``pt`` in report tables and ``drug``/``event`` from the engine: use
    whichever pair the frame has (the suite names one of them)."""
    rename = {}
    if "substance" in df.columns and "drug" not in df.columns:
        rename.update({"drug": "substance", "event": "pt"})
    elif "drug" in df.columns and "substance" not in df.columns:
        rename.update({"substance": "drug", "pt": "event"})
    if not rename:
        return suite
    text = json.dumps(suite)
    for old, new in rename.items():
        text = text.replace(f'"{old}"', f'"{new}"')
    return json.loads(text)
