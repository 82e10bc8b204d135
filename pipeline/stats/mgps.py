"""MGPS (DuMouchel's Gamma–Poisson shrinker): prior fit, diagnostics and posterior EBGM/EB05/EB95.

Model: N ~ Poisson(λE), λ ~ P·Gamma(α1, β1) + (1 − P)·Gamma(α2, β2) (shape, rate), so each component's
marginal of N is negative binomial NB(size α_k, prob β_k/(β_k + E)). θ = (α1, β1, α2, β2, P).

Likelihood options (see ``docs/adr/0003-statistics-conventions.md``):

``openebgm`` (default)
    pairs with N ≥ N*, each component truncated separately (openEBGM ``negLL``; PhViD ≥ 1.0.8).
``conditional``
    pairs with N ≥ N*, the mixture truncated (exact conditional likelihood; vigipy 3.5.1).
``zero-inclusive``
    every drug × event cell including N = 0 (DuMouchel 1999; openEBGM ``negLLzero``); zero cells are counted from
    the margins, never materialised.

Fitting works on losslessly grouped points (identical integer keys give identical terms), in transformed
parameters (log α, log β, logit P) with L-BFGS-B and an analytic gradient, from ≥ 4 starts, polished with
Nelder–Mead, and accepted only when another converged start agrees (openEBGM ``autoHyper`` rule).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy import optimize, special

log = logging.getLogger(__name__)

__all__ = [
    "LIKELIHOODS", "DEFAULT_STARTS", "AGREEMENT_TOL", "MgpsPoints", "MgpsFit", "group_points", "neg_loglik",
    "fit_mgps", "fit_points", "posterior", "ebgm", "eb_quantile",
]

LIKELIHOODS = ("openebgm", "conditional", "zero-inclusive")

# openEBGM vignette starts (α1, β1, α2, β2, P) and DuMouchel's 1999 FDA-SRS prior (a start only).
DEFAULT_STARTS: tuple[tuple[float, ...], ...] = (
    (0.2, 0.1, 2.0, 4.0, 1 / 3),
    (0.1, 0.2, 10.0, 10.0, 0.2),
    (0.3, 0.5, 6.0, 6.0, 0.5),
    (0.2041, 0.05816, 1.415, 1.838, 0.0969),
)
# openEBGM autoHyper tolerances for "another converged start agrees".
AGREEMENT_TOL = np.array([0.05, 0.05, 0.2, 0.2, 0.025])
PARAM_LIMIT = 100.0  # openEBGM param_limit
_XBOUND = 20.0  # box on transformed parameters: α, β in [2e-9, 4.9e8], P in expit(±20)


# ----------------------------------------------------------------------------------------------------------
# data: lossless grouping
# ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MgpsPoints:
    """Grouped likelihood points: count ``n``, expected count ``e`` and weight ``w`` (number of cells)."""

    n: np.ndarray
    e: np.ndarray
    w: np.ndarray
    n_cells: int
    n_zero_cells: int

    def __len__(self) -> int:
        return int(self.n.size)


def _col(counts, name) -> np.ndarray:
    if isinstance(counts, pa.Table):
        return counts.column(name).to_numpy()
    return np.asarray(counts[name])


def _has(counts, name) -> bool:
    return name in (counts.column_names if isinstance(counts, pa.Table) else counts.columns)


def group_points(counts, likelihood: str = "openebgm", n_star: int = 1) -> MgpsPoints:
    """Group a counts table (drug, event, a, n_drug, n_event, n_total[, expected]) into weighted points.

    Non-zero pairs are grouped by the exact integers (a, n_drug·n_event, n_total); with a stratified
    ``expected`` column by (a, expected). For ``zero-inclusive`` the zero cells of each margin pair (m1, m2) number
    #drugs with margin m1 × #events with margin m2 − #non-zero pairs with those margins; rows with a = 0 in
    ``counts`` are ignored because the margins already account for every zero cell.
    """
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"unknown MGPS likelihood {likelihood!r}; choose one of {', '.join(LIKELIHOODS)}")
    a = _col(counts, "a").astype(np.int64)
    n_drug = _col(counts, "n_drug").astype(np.int64)
    n_event = _col(counts, "n_event").astype(np.int64)
    n_total = _col(counts, "n_total").astype(np.int64)
    nz = a > 0
    stratified = False
    if _has(counts, "expected"):
        # a supplied E (e.g. stratified) is used as is; skip it only when it is the plain margin formula
        e_given = _col(counts, "expected").astype(np.float64)
        e_plain = n_drug.astype(np.float64) * n_event.astype(np.float64) / n_total.astype(np.float64)
        stratified = not np.allclose(e_given, e_plain, rtol=1e-12, atol=0.0)
    if likelihood != "zero-inclusive":
        keep = a >= n_star
        if stratified:
            e_all = _col(counts, "expected").astype(np.float64)[keep]
            key = pd.DataFrame({"n": a[keep], "e": e_all})
        else:
            key = pd.DataFrame({"n": a[keep], "p": n_drug[keep] * n_event[keep], "t": n_total[keep]})
        g = key.groupby(list(key.columns), sort=True).size().reset_index(name="w")
        e = g["e"].to_numpy(np.float64) if stratified else g["p"].to_numpy(np.float64) / g["t"].to_numpy(np.float64)
        return MgpsPoints(g["n"].to_numpy(np.int64), e, g["w"].to_numpy(np.float64), int(keep.sum()), 0)

    if stratified:
        raise ValueError("zero-inclusive MGPS is not available with a stratified expected count")
    if np.unique(n_total).size > 1:
        raise ValueError("zero-inclusive MGPS needs one n_total for the whole table")
    tot = int(n_total[0]) if n_total.size else 0
    drugs = pd.DataFrame({"k": _col(counts, "drug")[nz], "m": n_drug[nz]}).drop_duplicates("k")
    events = pd.DataFrame({"k": _col(counts, "event")[nz], "m": n_event[nz]}).drop_duplicates("k")
    dm = drugs["m"].value_counts()
    em = events["m"].value_counts()
    # all margin pairs (distinct drug margins × distinct event margins: small, not drug × event)
    m1 = np.repeat(dm.index.to_numpy(np.int64), em.size)
    m2 = np.tile(em.index.to_numpy(np.int64), dm.size)
    cells = np.repeat(dm.to_numpy(np.int64), em.size) * np.tile(em.to_numpy(np.int64), dm.size)
    nzp = pd.DataFrame({"m1": n_drug[nz], "m2": n_event[nz]}).value_counts()
    used = pd.Series(cells, index=pd.MultiIndex.from_arrays([m1, m2], names=["m1", "m2"])).sub(nzp, fill_value=0)
    zero_w = used.to_numpy().astype(np.int64)
    prods = used.index.get_level_values(0).to_numpy(np.int64) * used.index.get_level_values(1).to_numpy(np.int64)
    zero = pd.DataFrame({"n": 0, "p": prods, "w": zero_w})
    zero = zero[zero["w"] > 0]
    pos = pd.DataFrame({"n": a[nz], "p": n_drug[nz] * n_event[nz], "w": 1})
    g = pd.concat([zero, pos]).groupby(["n", "p"], sort=True)["w"].sum().reset_index()
    return MgpsPoints(g["n"].to_numpy(np.int64), g["p"].to_numpy(np.float64) / tot, g["w"].to_numpy(np.float64),
                      int(zero_w.clip(min=0).sum() + nz.sum()), int(zero_w.clip(min=0).sum()))


# ----------------------------------------------------------------------------------------------------------
# likelihood and gradient
# ----------------------------------------------------------------------------------------------------------

class _Data:
    """Per-point constants, with per-distinct-N terms so that lgamma/digamma run on a few hundred values."""

    def __init__(self, n, e, w, n_star):
        self.n = np.asarray(n, dtype=np.float64)
        self.e = np.asarray(e, dtype=np.float64)
        self.w = np.asarray(w, dtype=np.float64)
        self.n_star = int(n_star)
        self.un, self.inv = np.unique(self.n, return_inverse=True)
        self.const = float(np.sum(self.w * (special.xlogy(self.n, self.e) - special.gammaln(self.n + 1.0))))


def _component(alpha, beta, d: _Data, need_trunc: bool):
    """log NB density (without the α-free constants), its α/β derivatives, and log S = log P(N ≥ N*)."""
    log_be = np.log(beta + d.e)
    lg = (special.gammaln(alpha + d.un) - special.gammaln(alpha))[d.inv]
    dg = (special.digamma(alpha + d.un) - special.digamma(alpha))[d.inv]
    log_r = math.log(beta) - log_be  # log(β/(β+E)) < 0
    logf = lg + alpha * log_r - d.n * log_be
    dfa = dg + log_r
    dfb = alpha / beta - (alpha + d.n) / (beta + d.e)
    if not need_trunc:
        return logf, dfa, dfb, None, None, None
    # F(0) = r^α; S = 1 - Σ_{k<N*} f(k), with 1 - F(0) = -expm1(α log r) for accuracy
    f0_log = alpha * log_r
    S = -np.expm1(f0_log)
    f0 = np.exp(f0_log)
    dF_a = f0 * log_r
    dF_b = f0 * alpha * d.e / (beta * (beta + d.e))
    for k in range(1, d.n_star):
        lfk = (math.lgamma(alpha + k) - math.lgamma(alpha) - math.lgamma(k + 1.0) + alpha * log_r
               + k * (np.log(d.e) - log_be))
        fk = np.exp(lfk)
        S = S - fk
        dF_a = dF_a + fk * (special.digamma(alpha + k) - special.digamma(alpha) + log_r)
        dF_b = dF_b + fk * (alpha / beta - (alpha + k) / (beta + d.e))
    with np.errstate(divide="ignore"):
        logS = np.log(S)
    return logf, dfa, dfb, logS, -dF_a / S, -dF_b / S


def _negll_grad(theta: np.ndarray, d: _Data, likelihood: str) -> tuple[float, np.ndarray]:
    """−log-likelihood and its gradient with respect to θ = (α1, β1, α2, β2, P)."""
    a1, b1, a2, b2, p = (float(x) for x in theta)
    trunc = likelihood != "zero-inclusive"
    l1, da1, db1, s1, dsa1, dsb1 = _component(a1, b1, d, trunc)
    l2, da2, db2, s2, dsa2, dsb2 = _component(a2, b2, d, trunc)
    lp, lq = math.log(p), math.log1p(-p)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if likelihood == "openebgm":
            g1, g2 = l1 - s1, l2 - s2
            lm = np.logaddexp(lp + g1, lq + g2)
            r1 = np.exp(lp + g1 - lm)
            r2 = 1.0 - r1
            grads = (r1 * (da1 - dsa1), r1 * (db1 - dsb1), r2 * (da2 - dsa2), r2 * (db2 - dsb2), r1 / p - r2 / (1 - p))
            ll = lm
        else:
            lm = np.logaddexp(lp + l1, lq + l2)
            r1 = np.exp(lp + l1 - lm)
            r2 = 1.0 - r1
            grads = [r1 * da1, r1 * db1, r2 * da2, r2 * db2, r1 / p - r2 / (1 - p)]
            ll = lm
            if likelihood == "conditional":
                ld = np.logaddexp(lp + s1, lq + s2)
                t1 = np.exp(lp + s1 - ld)
                t2 = 1.0 - t1
                grads[0] = grads[0] - t1 * dsa1
                grads[1] = grads[1] - t1 * dsb1
                grads[2] = grads[2] - t2 * dsa2
                grads[3] = grads[3] - t2 * dsb2
                grads[4] = grads[4] - (t1 / p - t2 / (1 - p))
                ll = lm - ld
    w = d.w
    # plain reductions, not BLAS dot: BLAS threads cost more than they give on a busy box
    value = -(float(np.add.reduce(w * ll)) + d.const)
    grad = -np.array([float(np.add.reduce(w * g)) for g in grads])
    return value, grad


def neg_loglik(theta, n, e, w=None, likelihood: str = "openebgm", n_star: int = 1) -> float:
    """−log-likelihood of θ = (α1, β1, α2, β2, P) on points (n, e, weight w) under a likelihood option.

    For the truncated options pass only points with n ≥ ``n_star``.

    References
    ----------
    DuMouchel W. Bayesian data mining in large frequency tables, with an application to the FDA spontaneous
    reporting system. Am Stat 1999;53:177-190. doi:10.1080/00031305.1999.10474456
    Canida T, Ihrie J. openEBGM: An R implementation of the Gamma-Poisson Shrinker data mining model. R J
    2017;9:499-519 (``negLL``, ``negLLsquash``, ``negLLzero``).
    """
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"unknown MGPS likelihood {likelihood!r}")
    n = np.asarray(n, dtype=np.float64)
    w = np.ones_like(n) if w is None else np.asarray(w, dtype=np.float64)
    d = _Data(n, e, w, n_star)
    return _negll_grad(np.asarray(theta, dtype=np.float64), d, likelihood)[0]


# transformed parameters x = (log α1, log β1, log α2, log β2, logit P)
def _to_theta(x: np.ndarray) -> np.ndarray:
    return np.array([math.exp(x[0]), math.exp(x[1]), math.exp(x[2]), math.exp(x[3]), special.expit(x[4])])


def _to_x(theta) -> np.ndarray:
    t = np.asarray(theta, dtype=np.float64)
    return np.array([math.log(t[0]), math.log(t[1]), math.log(t[2]), math.log(t[3]), special.logit(t[4])])


def _objective(x, d, likelihood, scale):
    theta = _to_theta(x)
    value, g = _negll_grad(theta, d, likelihood)
    jac = np.array([g[0] * theta[0], g[1] * theta[1], g[2] * theta[2], g[3] * theta[3],
                    g[4] * theta[4] * (1.0 - theta[4])])
    if not np.isfinite(value):
        return 1e300, np.zeros(5)
    return value / scale, jac / scale


def _canonical(theta: np.ndarray) -> np.ndarray:
    """Label-switched copy (α2, β2, α1, β1, 1 − P): the same model."""
    return np.array([theta[2], theta[3], theta[0], theta[1], 1.0 - theta[4]])


def _agrees(t1: np.ndarray, t2: np.ndarray) -> bool:
    return bool(np.all(np.abs(t1 - t2) <= AGREEMENT_TOL) or np.all(np.abs(_canonical(t1) - t2) <= AGREEMENT_TOL))


# ----------------------------------------------------------------------------------------------------------
# fit result
# ----------------------------------------------------------------------------------------------------------

@dataclass
class MgpsFit:
    """A fitted MGPS prior with everything a manifest needs (:meth:`as_dict`).

    ``converged`` is True only when the accepted optimum is finite and at least one other converged start agrees
    with it; otherwise callers publish no EBGM (NaN).
    """

    theta: tuple[float, float, float, float, float]
    loglik: float
    converged: bool
    likelihood: str = "openebgm"
    n_star: int = 1
    n_points: int = 0
    n_cells: int = 0
    n_zero_cells: int = 0
    starts: list[dict[str, Any]] = field(default_factory=list)
    spread: dict[str, float] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def neg_loglik(self) -> float:
        return -self.loglik

    def as_dict(self) -> dict[str, Any]:
        names = ("alpha1", "beta1", "alpha2", "beta2", "p")
        return {
            "model": "MGPS two-gamma mixture (DuMouchel 1999)",
            "likelihood": self.likelihood,
            "n_star": self.n_star,
            "theta": dict(zip(names, (_finite(t) for t in self.theta))),
            "neg_loglik": _finite(-self.loglik),
            "converged": bool(self.converged),
            "n_points": int(self.n_points),
            "n_cells": int(self.n_cells),
            "n_zero_cells": int(self.n_zero_cells),
            "starts": _json_safe(self.starts),
            "spread": _json_safe(self.spread),
            "optimiser_messages": self.messages,
            "warnings": list(self.warnings),
            "seconds": round(self.seconds, 3),
        }

    def posterior(self, n, e, quantiles: tuple[float, ...] = (0.05, 0.95)) -> dict[str, np.ndarray]:
        """EBGM and posterior quantiles for counts ``n`` and expected counts ``e`` under this prior."""
        return posterior(self.theta, n, e, quantiles=quantiles)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MgpsFit":
        t = {k: (math.nan if v is None else float(v)) for k, v in d["theta"].items()}
        nll = math.nan if d.get("neg_loglik") is None else float(d["neg_loglik"])
        return cls(theta=(t["alpha1"], t["beta1"], t["alpha2"], t["beta2"], t["p"]), loglik=-nll,
                   converged=d["converged"], likelihood=d["likelihood"], n_star=d.get("n_star", 1),
                   n_points=d.get("n_points", 0), warnings=list(d.get("warnings", [])))


def _finite(x) -> float | None:
    """JSON-safe float: None for NaN/inf (manifests must stay valid JSON)."""
    x = float(x)
    return x if math.isfinite(x) else None


def _json_safe(x):
    if isinstance(x, float):
        return _finite(x)
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def _boundary_warnings(theta: np.ndarray, x: np.ndarray) -> list[str]:
    a1, b1, a2, b2, p = theta
    out = []
    if a1 < 1e-4 or a2 < 1e-4:
        out.append(f"boundary: alpha below 1e-4 (alpha1={a1:.3g}, alpha2={a2:.3g})")
    if np.any(theta[:4] > PARAM_LIMIT):
        out.append(f"boundary: a parameter above {PARAM_LIMIT:g} (theta={np.round(theta, 6).tolist()})")
    if p < 1e-3 or p > 1 - 1e-3:
        out.append(f"boundary: P={p:.3g} within 1e-3 of 0 or 1 (no over-dispersion / one component)")
    if np.any(np.abs(np.abs(x) - _XBOUND) < 1e-6):
        out.append("boundary: a parameter at the optimiser's box bound")
    if abs(a1 / b1 - a2 / b2) <= 1e-3 * max(a1 / b1, a2 / b2) and abs(a1 - a2) <= 1e-3 * max(a1, a2):
        out.append("boundary: the two components coincide (no over-dispersion)")
    return out


EXPLORE_MAX_POINTS = 20_000  # above this, starts explore a binned copy of the points first
EXPLORE_LOG_STEP = 0.02  # bin width in ln E for the exploration copy (E within ±1 %)


def _explore_points(points: MgpsPoints, step: float = EXPLORE_LOG_STEP) -> MgpsPoints:
    """Binned copy for exploring starts: exact N, E pooled in bins of width ``step`` in ln E (weighted geometric
    mean). Only used to run the starts; the accepted estimate is refined on the exact points."""
    le = np.log(points.e)
    key = pd.DataFrame({"n": points.n, "b": np.floor(le / step).astype(np.int64), "w": points.w,
                        "wl": points.w * le})
    g = key.groupby(["n", "b"], sort=False)[["w", "wl"]].sum()
    w = g["w"].to_numpy()
    return MgpsPoints(g.index.get_level_values(0).to_numpy(np.int64), np.exp(g["wl"].to_numpy() / w), w,
                      points.n_cells, points.n_zero_cells)


def _lbfgsb(d, likelihood, scale, x0, maxiter, ftol=1e-13):
    return optimize.minimize(_objective, np.clip(x0, -_XBOUND, _XBOUND), args=(d, likelihood, scale), jac=True,
                             method="L-BFGS-B", bounds=[(-_XBOUND, _XBOUND)] * 5,
                             options={"maxiter": maxiter, "ftol": ftol, "gtol": 1e-9})


def fit_points(points: MgpsPoints, likelihood: str = "openebgm", n_star: int = 1,
               starts=DEFAULT_STARTS, maxiter: int = 1000) -> MgpsFit:
    """Fit θ on grouped points; see :func:`fit_mgps`.

    Every start runs L-BFGS-B (transformed parameters, analytic gradient). With more than
    :data:`EXPLORE_MAX_POINTS` distinct points the starts run on a binned copy (E pooled within ±1 %) and the
    best one is then re-optimised on the exact points, so the accepted θ maximises the exact likelihood. The best
    is polished with Nelder–Mead and accepted only if another converged start agrees (openEBGM ``autoHyper``).
    """
    t0 = time.perf_counter()
    warnings: list[str] = []
    if len(points) < 5 or points.w.sum() < 10:
        warnings.append(f"too few points to fit MGPS ({len(points)} distinct, {points.w.sum():g} cells)")
        return MgpsFit(theta=(math.nan,) * 5, loglik=math.nan, converged=False, likelihood=likelihood,
                       n_star=n_star, n_points=len(points), n_cells=points.n_cells,
                       n_zero_cells=points.n_zero_cells, warnings=warnings,
                       seconds=time.perf_counter() - t0)
    d = _Data(points.n, points.e, points.w, n_star)
    scale = max(float(points.w.sum()), 1.0)  # per-cell scale keeps L-BFGS-B's tolerances meaningful
    staged = len(points) > EXPLORE_MAX_POINTS
    d_explore = _Data(*(lambda q: (q.n, q.e, q.w))(_explore_points(points)), n_star) if staged else d
    messages: list[str] = []
    if staged:
        messages.append(f"starts explored on {d_explore.n.size} binned points (ln E step {EXPLORE_LOG_STEP}), "
                        f"best refined on {len(points)} exact points")
    results = []
    for s in starts:
        r = _lbfgsb(d_explore, likelihood, scale, _to_x(s), maxiter, ftol=1e-11 if staged else 1e-13)
        theta = _to_theta(r.x)
        ok = bool(r.success) and np.isfinite(r.fun) and r.fun < 1e299
        results.append({"start": [float(v) for v in s], "theta": [float(v) for v in theta],
                        "neg_loglik": float(r.fun * scale), "converged": ok, "iterations": int(r.nit),
                        "message": str(r.message), "x": r.x})
    conv = [r for r in results if r["converged"]]
    messages += [f"start {i + 1}: {r['message']} ({r['iterations']} it)" for i, r in enumerate(results)]
    if any("ITERATIONS REACHED LIMIT" in r["message"].upper() for r in results):
        warnings.append("iteration limit hit in at least one start")
    pool = conv or [r for r in results if np.isfinite(r["neg_loglik"]) and r["neg_loglik"] < 1e299]
    if not pool:
        warnings.append("no start gave a finite likelihood")
        return MgpsFit(theta=(math.nan,) * 5, loglik=math.nan, converged=False, likelihood=likelihood,
                       n_star=n_star, n_points=len(points), n_cells=points.n_cells,
                       n_zero_cells=points.n_zero_cells, starts=_clean(results), messages=messages,
                       warnings=warnings, seconds=time.perf_counter() - t0)
    best = min(pool, key=lambda r: r["neg_loglik"])
    best_theta = np.array(best["theta"])
    consistent = bool(conv) and any(r is not best and _agrees(np.array(r["theta"]), best_theta) for r in conv)
    # Nelder–Mead polish in transformed space from a small simplex (on the exploration points when staged: the
    # exact refinement below then finishes on the exact likelihood); kept only if it improves.
    x_best, f_best = best["x"], best["neg_loglik"]
    simplex = np.vstack([x_best] + [x_best + 1e-3 * np.eye(5)[i] for i in range(5)])
    nm = optimize.minimize(lambda x: _objective(np.clip(x, -_XBOUND, _XBOUND), d_explore, likelihood, scale)[0],
                           x_best, method="Nelder-Mead",
                           options={"maxfev": 300 if staged else 1000, "xatol": 1e-8, "fatol": 1e-14,
                                    "initial_simplex": simplex})
    if nm.fun * scale < f_best:
        x_best = np.clip(nm.x, -_XBOUND, _XBOUND)
    messages.append(f"nelder-mead polish: {nm.message} ({nm.nit} it, -logL {f_best:.10g} -> "
                    f"{min(nm.fun * scale, f_best):.10g})")
    x_final = x_best
    if staged:
        f0 = _objective(x_best, d, likelihood, scale)[0]
        r = _lbfgsb(d, likelihood, scale, x_best, maxiter)
        messages.append(f"exact refinement (L-BFGS-B): {r.message} ({r.nit} it)")
        # a line-search stop without loss near a flat optimum is not a failure; anything else is
        stalled = "ABNORMAL" in str(r.message).upper() and r.fun <= f0 and np.max(np.abs(r.jac)) < 1e-5
        if not r.success and not stalled:
            warnings.append(f"exact refinement did not converge: {r.message}")
            consistent = False
        if not _agrees(_to_theta(r.x), best_theta):
            warnings.append("exact refinement moved away from the explored optimum")
            consistent = False
        x_final = r.x
    theta = _to_theta(x_final)
    value = _negll_grad(theta, d, likelihood)[0]
    warnings += _boundary_warnings(theta, x_final)
    if not conv:
        warnings.append("no start converged")
    elif not consistent:
        warnings.append("no consistent convergence: no other converged start within "
                        "(0.05, 0.05, 0.2, 0.2, 0.025) of the best; EBGM not published")
    thetas = np.array([r["theta"] for r in conv]) if conv else np.empty((0, 5))
    lls = np.array([r["neg_loglik"] for r in conv])
    spread = {"n_converged": int(len(conv)), "n_starts": len(results), "staged": staged}
    if len(conv):
        aligned = np.array([t if np.abs(t - theta).sum() <= np.abs(_canonical(t) - theta).sum() else _canonical(t)
                            for t in thetas])
        spread.update({"theta_range": (aligned.max(axis=0) - aligned.min(axis=0)).tolist(),
                       "neg_loglik_range": float(lls.max() - lls.min())})
    for w_ in warnings:
        log.warning("MGPS (%s): %s", likelihood, w_)
    return MgpsFit(theta=tuple(float(t) for t in theta), loglik=-float(value),
                   converged=bool(conv) and consistent and bool(np.isfinite(value)), likelihood=likelihood,
                   n_star=n_star, n_points=len(points), n_cells=points.n_cells, n_zero_cells=points.n_zero_cells,
                   starts=_clean(results), spread=spread, messages=messages, warnings=warnings,
                   seconds=time.perf_counter() - t0)


def _clean(results):
    return [{k: v for k, v in r.items() if k != "x"} for r in results]


def _single_blas_thread():
    """L-BFGS-B calls BLAS on 5-vectors; multi-threaded BLAS makes each call ~ms on a busy machine."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional dependency
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def fit_mgps(counts, likelihood: str = "openebgm", *, n_star: int = 1, starts=DEFAULT_STARTS) -> MgpsFit:
    """Fit the MGPS two-gamma prior on a counts table (drug, event, a, n_drug, n_event, n_total).

    Parameters
    ----------
    counts : pandas.DataFrame or pyarrow.Table
        Non-zero pairs of the whole background (every drug × event of the database).
    likelihood : {"openebgm", "conditional", "zero-inclusive"}
        See the module docstring.
    n_star : int
        Truncation point N* of the truncated likelihoods (pairs with a ≥ N* are used).
    starts : sequence of θ
        Starting values; default: openEBGM's three vignette starts and DuMouchel's FDA-SRS prior.

    Returns
    -------
    MgpsFit

    References
    ----------
    DuMouchel W. Bayesian data mining in large frequency tables, with an application to the FDA spontaneous
    reporting system. Am Stat 1999;53:177-190. doi:10.1080/00031305.1999.10474456
    Canida T, Ihrie J. openEBGM: An R implementation of the Gamma-Poisson Shrinker data mining model. R J
    2017;9:499-519 (``autoHyper`` agreement rule).
    """
    points = group_points(counts, likelihood, n_star)
    with _single_blas_thread():
        return fit_points(points, likelihood, n_star if likelihood != "zero-inclusive" else 0, starts)


# ----------------------------------------------------------------------------------------------------------
# posterior
# ----------------------------------------------------------------------------------------------------------

def _qn(theta, n, e):
    a1, b1, a2, b2, p = theta
    n = np.asarray(n, dtype=np.float64)
    e = np.asarray(e, dtype=np.float64)

    def lognb(a, b):
        return (special.gammaln(a + n) - special.gammaln(a) - special.gammaln(n + 1.0)
                + a * np.log(b / (b + e)) + special.xlogy(n, e / (b + e)))

    l1 = math.log(p) + lognb(a1, b1)
    l2 = math.log1p(-p) + lognb(a2, b2)
    with np.errstate(invalid="ignore"):
        return np.exp(l1 - np.logaddexp(l1, l2))


def ebgm(theta, n, e, qn=None) -> np.ndarray:
    """Empirical-Bayes geometric mean exp(E[ln λ | N]) under the two-gamma prior θ.

    Uses the untruncated component densities for the mixing weight Qn (DuMouchel 1999 eq. 6; openEBGM ``Qn``).

    References
    ----------
    DuMouchel W. Am Stat 1999;53:177-190.
    """
    a1, b1, a2, b2, _ = theta
    n = np.asarray(n, dtype=np.float64)
    e = np.asarray(e, dtype=np.float64)
    q = _qn(theta, n, e) if qn is None else qn
    return np.exp(q * (special.digamma(a1 + n) - np.log(b1 + e))
                  + (1.0 - q) * (special.digamma(a2 + n) - np.log(b2 + e)))


def eb_quantile(theta, n, e, prob: float, qn=None, rtol: float = 1e-8, maxiter: int = 200) -> np.ndarray:
    """Quantile ``prob`` of the posterior mixture of gammas, solved to |Δx| ≤ rtol·x.

    The root of Qn·G(x; α1+N, β1+E) + (1−Qn)·G(x; α2+N, β2+E) = prob lies between the two components' own
    quantiles, which gives a tight bracket; safeguarded Newton steps in log x (bisection when a step leaves the
    bracket) converge in a few vectorised iterations. A row stops when the bracket is narrower than rtol in log x
    or a Newton step is below rtol/10 (quadratic convergence: the error is then far below rtol).

    References
    ----------
    DuMouchel W. Am Stat 1999;53:177-190 (EB05 as the 5th percentile of the posterior of λ).
    """
    a1, b1, a2, b2, _ = theta
    n = np.asarray(n, dtype=np.float64)
    e = np.asarray(e, dtype=np.float64)
    q = _qn(theta, n, e) if qn is None else np.asarray(qn, dtype=np.float64)
    # shape-only terms once per distinct N
    un, inv = np.unique(n, return_inverse=True)
    inv = inv.reshape(n.shape)
    s1, s2 = a1 + un, a2 + un
    g1, g2 = special.gammaincinv(s1, prob)[inv], special.gammaincinv(s2, prob)[inv]
    lg1, lg2 = special.gammaln(s1)[inv], special.gammaln(s2)[inv]
    s1, s2 = s1[inv], s2[inv]
    r1, r2 = b1 + e, b2 + e
    x1, x2 = np.log(g1 / r1), np.log(g2 / r2)
    lo, hi = np.minimum(x1, x2), np.maximum(x1, x2)
    x = np.where(q >= 0.5, x1, x2)
    act = np.flatnonzero((hi - lo) > rtol)
    for _ in range(maxiter):
        if act.size == 0:
            break
        xa, qa, loa, hia = x[act], q[act], lo[act], hi[act]
        sa1, sa2, ra1, ra2 = s1[act], s2[act], r1[act], r2[act]
        ex = np.exp(xa)
        F = qa * special.gammainc(sa1, ra1 * ex) + (1.0 - qa) * special.gammainc(sa2, ra2 * ex) - prob
        # density of the mixture with respect to log x
        dens = (qa * np.exp(sa1 * (np.log(ra1) + xa) - ra1 * ex - lg1[act])
                + (1.0 - qa) * np.exp(sa2 * (np.log(ra2) + xa) - ra2 * ex - lg2[act]))
        below = F < 0
        loa = np.where(below, xa, loa)
        hia = np.where(below, hia, xa)
        with np.errstate(divide="ignore", invalid="ignore"):
            cand = xa - F / dens
        bad = ~np.isfinite(cand) | (cand <= loa) | (cand >= hia)
        cand = np.where(bad, 0.5 * (loa + hia), cand)
        done = (F == 0) | ((hia - loa) <= rtol) | (~bad & (np.abs(cand - xa) <= 0.1 * rtol))
        newx = np.where(F == 0, xa, cand)
        x[act], lo[act], hi[act] = newx, loa, hia
        act = act[~done]
    return np.exp(x)


def posterior(theta, n, e, quantiles: tuple[float, ...] = (0.05, 0.95)) -> dict[str, np.ndarray]:
    """EBGM, Qn and posterior quantiles (keys ``ebgm``, ``qn``, ``eb05``/``eb95`` or ``q<prob>``).

    Each distinct (N, E) is solved once. NaN θ gives NaN everywhere.

    References
    ----------
    DuMouchel W. Am Stat 1999;53:177-190.
    """
    n = np.asarray(n, dtype=np.float64)
    e = np.asarray(e, dtype=np.float64)
    theta = tuple(float(t) for t in theta)
    names = {q: ("eb05" if q == 0.05 else "eb95" if q == 0.95 else f"q{q:g}") for q in quantiles}
    if not np.all(np.isfinite(theta)) or n.size == 0:
        out = {"ebgm": np.full(n.shape, np.nan), "qn": np.full(n.shape, np.nan)}
        out.update({names[q]: np.full(n.shape, np.nan) for q in quantiles})
        return out
    # distinct (N, E): E's exact bit pattern as an integer key (equal floats, equal terms)
    from .frequentist import _unique_rows

    (ukn, uke), codes = _unique_rows(n.astype(np.int64), e.view(np.int64) if e.dtype == np.float64
                                     else e.astype(np.float64).view(np.int64))
    un = ukn.astype(np.float64)
    ue = uke.view(np.float64)
    qn = _qn(theta, un, ue)
    out = {"ebgm": ebgm(theta, un, ue, qn)[codes], "qn": qn[codes]}
    for q in quantiles:
        out[names[q]] = eb_quantile(theta, un, ue, q, qn)[codes]
    return out
