"""``disproportionality()``: counts table → every statistic and flag of docs/INTERFACE.md, one row per (drug, event)."""

from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.errors import PipelineError

from .rules import Thresholds

from . import frequentist as fq
from .mgps import LIKELIHOODS, MgpsFit, fit_mgps, posterior

log = logging.getLogger(__name__)

__all__ = ["Thresholds", "OUTPUT_COLUMNS", "disproportionality", "validate_counts", "signal_flags"]

OUTPUT_COLUMNS = (
    "drug", "event", "a", "b", "c", "d", "n_total", "expected", "prr", "prr_lo", "prr_hi", "chi2", "chi2_yates",
    "ror", "ror_lo", "ror_hi", "ic", "ic025", "ic975", "ebgm", "eb05", "eb95", "fisher_p", "fisher_midp",
    "signal_prr", "signal_ror", "signal_ic", "signal_ebgm",
)
EXTRA_COLUMNS = ("n_drug", "n_event", "fisher_q", "qn")
#: with a stratified E: the E that MGPS used and the crude-E MGPS columns (own prior fitted on crude E)
STRATIFIED_COLUMNS = ("expected_strat", "ebgm_crude", "eb05_crude", "eb95_crude")


def signal_flags(df: pd.DataFrame, t: Thresholds) -> dict[str, np.ndarray]:
    """The four flag columns; comparisons with NaN are False, so undefined statistics never flag."""
    a = df["a"].to_numpy()
    return {
        "signal_prr": (a >= t.prr_min_a) & (df["prr"].to_numpy() >= t.prr_min)
                      & (df["chi2_yates"].to_numpy() >= t.chi2_yates_min),
        "signal_ror": (a >= t.ror_min_a) & (df["ror_lo"].to_numpy() > t.ror_lo_min),
        "signal_ic": df["ic025"].to_numpy() > t.ic025_min,
        "signal_ebgm": (df["eb05"].to_numpy() >= t.eb05_min) & (a >= t.ebgm_min_a),
    }


def validate_counts(counts, *, check_unique: bool = True) -> pd.DataFrame:
    """Check a counts table and return it as a DataFrame with int64 counts; PipelineError with a reason if bad."""
    if isinstance(counts, pa.Table):
        df = counts.to_pandas()
    elif isinstance(counts, pd.DataFrame):
        df = counts
    else:
        raise PipelineError(f"counts: expected a DataFrame or pyarrow Table, got {type(counts).__name__}")
    need = ("drug", "event", "a", "n_drug", "n_event", "n_total")
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise PipelineError(f"counts: missing column(s) {', '.join(missing)}")
    def text(col):
        return col if pd.api.types.is_string_dtype(col) else col.astype(str)

    # keep the string columns as they are (no per-row Python objects)
    out = pd.DataFrame({"drug": text(df["drug"]).reset_index(drop=True),
                        "event": text(df["event"]).reset_index(drop=True)})
    for c in ("a", "n_drug", "n_event", "n_total"):
        col = df[c]
        if col.isna().any():
            raise PipelineError(f"counts: column {c} has missing values")
        v = col.to_numpy()
        if v.dtype.kind == "f":
            if not np.all(v == np.round(v)):
                raise PipelineError(f"counts: column {c} has non-integer values")
        elif v.dtype.kind not in "iu":
            try:
                v = pd.to_numeric(col).to_numpy()
            except (ValueError, TypeError) as exc:
                raise PipelineError(f"counts: column {c} is not numeric") from exc
        v = v.astype(np.int64)
        if (v < 0).any():
            raise PipelineError(f"counts: column {c} has negative values (first at row {int(np.argmax(v < 0))})")
        out[c] = v
    if "expected" in df.columns:
        out["expected"] = df["expected"].to_numpy(np.float64)
    checks = [
        (out["a"] > out["n_drug"], "a > n_drug"),
        (out["a"] > out["n_event"], "a > n_event"),
        (out["n_drug"] > out["n_total"], "n_drug > n_total"),
        (out["n_event"] > out["n_total"], "n_event > n_total"),
        (out["n_total"] - out["n_drug"] - out["n_event"] + out["a"] < 0, "d = n_total - n_drug - n_event + a < 0"),
    ]
    for mask, what in checks:
        if mask.any():
            i = int(np.argmax(mask.to_numpy()))
            raise PipelineError(f"counts: {what} in {int(mask.sum())} row(s), e.g. drug={out['drug'].iat[i]!r} "
                                f"event={out['event'].iat[i]!r}")
    if not check_unique:  # counts built by count_pairs/count_rows: one row per pair by construction
        return out
    # one row per (drug, event): check on integer codes, much cheaper than hashing string pairs
    dcode, _ = pd.factorize(out["drug"])
    ecode, euniq = pd.factorize(out["event"])
    dup = pd.Series(dcode.astype(np.int64) * (len(euniq) + 1) + ecode.astype(np.int64)).duplicated()
    if dup.any():
        i = int(np.argmax(dup.to_numpy()))
        raise PipelineError(f"counts: {int(dup.sum())} duplicate (drug, event) row(s), e.g. "
                            f"({out['drug'].iat[i]!r}, {out['event'].iat[i]!r})")
    return out


def _fit(df: pd.DataFrame, likelihood: str, stratified: bool) -> MgpsFit:
    cols = ["drug", "event", "a", "n_drug", "n_event", "n_total"] + (["expected"] if stratified else [])
    try:
        return fit_mgps(df[cols], likelihood=likelihood)
    except ValueError as exc:
        raise PipelineError(f"MGPS: {exc}") from exc


def _posterior(fit: MgpsFit, a: np.ndarray, e: np.ndarray) -> dict[str, np.ndarray]:
    if fit.published:
        return posterior(fit.theta, a, e)
    nan = np.full(a.shape, np.nan)
    return {"ebgm": nan, "eb05": nan, "eb95": nan, "qn": nan}


def disproportionality(counts, *, confidence_level: float = 0.95, thresholds: Thresholds | Mapping | None = None,
                       mgps_likelihood: str = "openebgm", mgps_fit: MgpsFit | None = None,
                       haldane: bool = False, mgps_fit_crude: MgpsFit | None = None,
                       q_family=None, check_unique: bool = True) -> tuple[pd.DataFrame, MgpsFit]:
    """All disproportionality statistics and signal flags for a counts table.

    Parameters
    ----------
    counts : DataFrame or pyarrow Table
        ``drug, event, a, n_drug, n_event, n_total`` (int, one row per pair). An ``expected`` column (the
        stratified E of :func:`count_pairs`) is used by MGPS only: ``ebgm, eb05, eb95`` then come from a prior
        fitted on the stratified E, and ``ebgm_crude, eb05_crude, eb95_crude`` from a prior fitted on the crude
        E = n_drug·n_event/n_total; PRR, ROR and IC always use the crude table.
    confidence_level : float
        Level of the PRR/ROR intervals and the IC limits (columns keep their 95 % names).
    thresholds : Thresholds or mapping, optional
        Signal rules; defaults of :class:`Thresholds`.
    mgps_likelihood : {"openebgm", "conditional", "zero-inclusive"}
        Likelihood for fitting the MGPS prior on ``counts`` when ``mgps_fit`` is not given.
    mgps_fit : MgpsFit, optional
        A prior fitted elsewhere (e.g. on the whole ingredient × PT background) applied to these rows (with a
        stratified E: the prior fitted on stratified E).
    mgps_fit_crude : MgpsFit, optional
        With a stratified E: the prior fitted on crude E (fitted on ``counts`` when not given).
    q_family : array_like, optional
        One key per row: ``fisher_q`` is Benjamini–Hochberg within each key over the rows with a ≥ 1 (NaN where
        a = 0). Default: the drug.
    check_unique : bool
        Check that each (drug, event) has one row (skip only for counts this package built).
    haldane : bool
        Add 0.5 to all four cells only for the statistic that is otherwise undefined (ROR when b·c = 0, PRR when
        c = 0). Off by default.

    Returns
    -------
    (DataFrame, MgpsFit)
        Columns :data:`OUTPUT_COLUMNS` then ``n_drug, n_event, fisher_q, qn`` (and :data:`STRATIFIED_COLUMNS`
        when a stratified E was supplied). EBGM columns are published whenever the prior's likelihood has a
        finite maximum (boundary fits included); NaN only when no prior could be fitted.

    References
    ----------
    Evans SJW et al. Pharmacoepidemiol Drug Saf 2001;10:483-486 (PRR rule).
    Norén GN et al. Stat Methods Med Res 2013;22:57-69 (IC).
    DuMouchel W. Am Stat 1999;53:177-190 (MGPS).
    Szarfman A et al. Drug Saf 2002;25:381-392 (EB05 ≥ 2).
    Benjamini Y, Hochberg Y. J R Stat Soc B 1995;57:289-300 (fisher_q).
    """
    if mgps_likelihood not in LIKELIHOODS:
        raise PipelineError(f"unknown MGPS likelihood {mgps_likelihood!r}; choose one of {', '.join(LIKELIHOODS)}")
    if not 0.0 < float(confidence_level) < 1.0:
        raise PipelineError(f"confidence level must be in (0, 1), got {confidence_level}")
    t = thresholds if isinstance(thresholds, Thresholds) else Thresholds.from_mapping(thresholds)
    df = validate_counts(counts, check_unique=check_unique)
    a = df["a"].to_numpy(np.int64)
    b = df["n_drug"].to_numpy(np.int64) - a
    c = df["n_event"].to_numpy(np.int64) - a
    d = df["n_total"].to_numpy(np.int64) - df["n_drug"].to_numpy(np.int64) - c
    e = fq.expected(a, b, c, d)
    stratified = "expected" in df.columns
    e_mgps = df["expected"].to_numpy(np.float64) if stratified else e

    out: dict[str, Any] = {"drug": df["drug"], "event": df["event"], "a": a, "b": b, "c": c,
                           "d": d, "n_total": df["n_total"].to_numpy(np.int64), "expected": e}
    out["prr"], out["prr_lo"], out["prr_hi"] = fq.prr(a, b, c, d, confidence_level, haldane=haldane)
    out["chi2"] = fq.chi2_pearson(a, b, c, d)
    out["chi2_yates"] = fq.chi2_yates(a, b, c, d)
    out["ror"], out["ror_lo"], out["ror_hi"] = fq.ror(a, b, c, d, confidence_level, haldane=haldane)
    out["ic"], out["ic025"], out["ic975"] = fq.ic_noren(a, e, confidence_level)

    if mgps_fit is None:
        mgps_fit = _fit(df, mgps_likelihood, stratified)
    post = _posterior(mgps_fit, a, e_mgps)
    out["ebgm"], out["eb05"], out["eb95"] = post["ebgm"], post["eb05"], post["eb95"]
    out["fisher_p"], out["fisher_midp"] = fq.fisher_one_sided(a, b, c, d)
    res = pd.DataFrame(out)
    for k, v in signal_flags(res, t).items():
        res[k] = v
    res["n_drug"] = df["n_drug"].to_numpy(np.int64)
    res["n_event"] = df["n_event"].to_numpy(np.int64)
    family = pd.factorize(df["drug"])[0] if q_family is None else pd.factorize(pd.Series(q_family))[0]
    res["fisher_q"] = fq.bh_qvalues_by(res["fisher_p"].to_numpy(), family, a >= 1)
    res["qn"] = post["qn"]
    if stratified:
        if mgps_fit_crude is None:
            mgps_fit_crude = _fit(df, mgps_likelihood, False)
        crude = _posterior(mgps_fit_crude, a, e)
        res["expected_strat"] = e_mgps
        res["ebgm_crude"], res["eb05_crude"], res["eb95_crude"] = crude["ebgm"], crude["eb05"], crude["eb95"]
        res.attrs["mgps_fit_crude"] = mgps_fit_crude
    return res, mgps_fit
