"""MGPS (DuMouchel's Gamma–Poisson shrinker): prior fit, diagnostics and posterior EBGM/EB05/EB95.

Model: N ~ Poisson(λE), λ ~ P·Gamma(α1, β1) + (1 − P)·Gamma(α2, β2) (shape, rate), so each component's
marginal of N is negative binomial NB(size α_k, prob β_k/(β_k + E)). θ = (α1, β1, α2, β2, P).

One module on purpose (longer than the others): the likelihoods, the multi-start fit, the boundary limits and
the posterior share one parametrisation and its numerically stable limits; apart, each would need the others'
internals.

Likelihood options (see ``docs/adr/0003-statistics-conventions.md``):

``openebgm`` (default)
    pairs with N ≥ N*, each component truncated separately (openEBGM ``negLL``; PhViD ≥ 1.0.8).
``conditional``
    pairs with N ≥ N*, the mixture truncated (exact conditional likelihood; vigipy 3.5.1).
``zero-inclusive``
    every drug × event cell including N = 0 (DuMouchel 1999; openEBGM ``negLLzero``); zero cells are counted from
    the margins, never materialised.

Parametrisation. The optimiser works on each component's mean μ = α/β and shape α (log scale) and on P itself in
[0, 1]. Along the ridge where a component collapses to a point mass (α, β → ∞ with α/β fixed) the negative
binomial tends to Poisson(N; μE); written in (μ, α) with log1p and Stirling-series differences, its log-pmf stays
accurate up to α ≈ 1e15 and equals the Poisson limit there, so a boundary optimum (a point-mass component, P at 0
or 1) is evaluated stably and is a valid answer: EBGM/EB05/EB95 are computed from it and the boundary is recorded
(:attr:`MgpsFit.boundary`).

Fitting works on losslessly grouped points (identical integer keys give identical terms), with L-BFGS-B and an
analytic gradient from several starts; the best is polished. Raw parameters are not identified along such
ridges, so starts are compared by −log L and by the posterior summaries they imply (EBGM and EB05 over all
points, maximum relative difference); EBGM is published whenever the likelihood has a finite maximum, and a
disagreement between starts is a warning.
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

from pipeline.jsonsafe import jsonable
from pipeline.vocabulary import MGPS_LIKELIHOODS

log = logging.getLogger(__name__)

__all__ = [
    "LIKELIHOODS", "DEFAULT_STARTS", "AGREEMENT", "MgpsPoints", "MgpsFit", "group_points", "neg_loglik",
    "fit_mgps", "fit_points", "posterior", "ebgm", "eb_quantile", "nb_logpmf",
]

LIKELIHOODS = MGPS_LIKELIHOODS

# openEBGM vignette starts (α1, β1, α2, β2, P), DuMouchel's 1999 FDA-SRS prior (a start only), and a start next to
# the point-mass boundary at λ = 1 (a quiet background: most pairs reported as expected; the likelihood is flat in
# α along that ridge, so a start far from it crawls).
DEFAULT_STARTS: tuple[tuple[float, ...], ...] = (
    (0.2, 0.1, 2.0, 4.0, 1 / 3),
    (0.1, 0.2, 10.0, 10.0, 0.2),
    (0.3, 0.5, 6.0, 6.0, 0.5),
    (0.2041, 0.05816, 1.415, 1.838, 0.0969),
    (2.0, 0.01, 1e8, 1e8, 0.001),
)
# Two starts agree when −log L differs by at most ``neg_loglik`` (absolute) and EBGM and EB05 by at most
# ``ebgm``/``eb05`` (maximum relative difference over all points).
AGREEMENT = {"neg_loglik": 0.01, "ebgm": 0.01, "eb05": 0.01}
PARAM_LIMIT = 100.0  # openEBGM param_limit (reported, not a failure)
# Box of the transformed parameters x = (log α1, log μ1, log α2, log μ2, P).
LOG_ALPHA_BOUNDS = (-20.0, 35.0)  # α up to 1.6e15: the NB is Poisson to double precision there
LOG_MU_BOUNDS = (-20.0, 20.0)
_BOUNDS = [LOG_ALPHA_BOUNDS, LOG_MU_BOUNDS, LOG_ALPHA_BOUNDS, LOG_MU_BOUNDS, (0.0, 1.0)]
POINT_MASS_ALPHA = 1e6  # a component with α above this is reported as (numerically) a point mass
_SERIES_MIN = 20.0  # Stirling/asymptotic series for arguments ≥ this, direct special functions below


# ----------------------------------------------------------------------------------------------------------
# numerically stable pieces of the negative binomial in (α, μ)
# ----------------------------------------------------------------------------------------------------------

def _delta(x):
    """Stirling remainder δ(x) = lgamma(x) − [(x − ½) log x − x + ½ log 2π] for x ≥ 20 (error < 1e-17)."""
    x = np.asarray(x, dtype=np.float64)
    x2 = x * x
    return (1 / 12 - (1 / 360 - (1 / 1260 - (1 / 1680 - 1 / (1188 * x2)) / x2) / x2) / x2) / x


def _psi_tail(x):
    """R(x) = Σ B_2k/(2k x^2k), so that ψ(x) = log x − 1/(2x) − R(x), for x ≥ 20."""
    x = np.asarray(x, dtype=np.float64)
    y = 1.0 / (x * x)
    return y * (1 / 12 - y * (1 / 120 - y * (1 / 252 - y * (1 / 240 - y * (1 / 132 - y * 691 / 32760)))))


def _lpoch_rel(alpha: float, n):
    """D(α, n) = lgamma(α + n) − lgamma(α) − n·log α, accurate for any α (→ 0 as α → ∞)."""
    n = np.asarray(n, dtype=np.float64)
    if alpha < _SERIES_MIN:
        return special.gammaln(alpha + n) - special.gammaln(alpha) - n * math.log(alpha)
    return (alpha + n - 0.5) * np.log1p(n / alpha) - n + _delta(alpha + n) - _delta(alpha)


def _dpsi_scaled(alpha: float, n):
    """α·[ψ(α + n) − ψ(α)], accurate for any α (→ n as α → ∞)."""
    n = np.asarray(n, dtype=np.float64)
    if alpha < _SERIES_MIN:
        return alpha * (special.digamma(alpha + n) - special.digamma(alpha))
    return alpha * np.log1p(n / alpha) + n / (2.0 * (alpha + n)) - alpha * (_psi_tail(alpha + n) - _psi_tail(alpha))


def _psi_minus_log(x):
    """ψ(x) − log x, accurate for large x."""
    x = np.asarray(x, dtype=np.float64)
    big = x >= _SERIES_MIN
    out = np.empty_like(x)
    out[~big] = special.digamma(x[~big]) - np.log(x[~big])
    xb = x[big]
    out[big] = -0.5 / xb - _psi_tail(xb)
    return out


def _log_gamma_density_logx(s, y):
    """log of the Gamma(s, 1) density of y times y (density with respect to log y), stable for large s.

    s·log y − y − lgamma(s) = −bd0(s, y) + ½ log(s/2π) − δ(s) (Loader's deviance form) when s ≥ 20.
    """
    from .frequentist import _bd0

    s = np.asarray(s, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    out = np.empty(np.broadcast(s, y).shape)
    s, y = np.broadcast_arrays(s, y)
    big = s >= _SERIES_MIN
    with np.errstate(divide="ignore", invalid="ignore"):
        out[~big] = s[~big] * np.log(y[~big]) - y[~big] - special.gammaln(s[~big])
        if big.any():
            sb, yb = s[big], y[big]
            out[big] = -_bd0(sb, yb) + 0.5 * np.log(sb / (2 * math.pi)) - _delta(sb)
    return out


def nb_logpmf(n, alpha: float, mu: float, e):
    """log P(N = n) for N ~ NB(size α, prob β/(β + E)) with β = α/μ, i.e. the Poisson(λE)–Gamma(α, α/μ) marginal.

    Written as D(α, n) + n·log(μE) − (α + n)·log1p(μE/α) − lgamma(n + 1), which equals the Poisson(μE) log-pmf
    in the limit α → ∞ and keeps full accuracy on the way there (α = ``inf`` gives the Poisson limit exactly).
    """
    n = np.asarray(n, dtype=np.float64)
    m = mu * np.asarray(e, dtype=np.float64)
    if math.isinf(alpha):
        return special.xlogy(n, m) - m - special.gammaln(n + 1.0)
    return _lpoch_rel(alpha, n) + special.xlogy(n, m) - (alpha + n) * np.log1p(m / alpha) - special.gammaln(n + 1.0)


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
# likelihood and gradient in x = (log α1, log μ1, log α2, log μ2, P)
# ----------------------------------------------------------------------------------------------------------

class _Data:
    """Per-point constants, with per-distinct-N terms so that the special functions run on a few hundred values."""

    def __init__(self, n, e, w, n_star):
        self.n = np.asarray(n, dtype=np.float64)
        self.e = np.asarray(e, dtype=np.float64)
        self.w = np.asarray(w, dtype=np.float64)
        self.n_star = int(n_star)
        from .frequentist import unique_sorted

        self.un, self.inv = unique_sorted(self.n, return_inverse=True)
        self.inv = self.inv.reshape(self.n.shape)
        # the α- and μ-free part of every log-pmf: n·log E − lgamma(n + 1)
        self.const = float(np.sum(self.w * (special.xlogy(self.n, self.e) - special.gammaln(self.n + 1.0))))


def _component(alpha: float, mu: float, d: _Data, need_trunc: bool):
    """Variable part of log f(N), its derivatives in log α and log μ, and log S = log P(N ≥ N*) with derivatives.

    log f = D(α, N) + N·log μ − (α + N)·log1p(m/α) (+ N log E − lgamma(N+1), kept in ``d.const``), m = μE;
    ∂/∂log μ = α(N − m)/(α + m); ∂/∂log α = α[ψ(α+N) − ψ(α)] − α·log1p(m/α) − ∂/∂log μ (→ 0 as α → ∞).
    """
    m = mu * d.e
    l1p = np.log1p(m / alpha)
    frac = m / (alpha + m)  # m/(α+m), → 0 or 1 without overflow
    logf = _lpoch_rel(alpha, d.un)[d.inv] + d.n * math.log(mu) - (alpha + d.n) * l1p
    dlm = alpha * (d.n - m) / (alpha + m)
    dla = _dpsi_scaled(alpha, d.un)[d.inv] - alpha * l1p - dlm
    if not need_trunc:
        return logf, dla, dlm, None, None, None
    # f(0) = (α/(α+m))^α: log f(0) = −α·log1p(m/α) → −m (Poisson) as α → ∞
    lf0 = -alpha * l1p
    S = -np.expm1(lf0)
    f0 = np.exp(lf0)
    dS_a = -f0 * (lf0 + alpha * frac)
    dS_m = f0 * alpha * frac
    log_m = np.log(m)
    for k in range(1, d.n_star):
        lfk = (float(_lpoch_rel(alpha, k)) + k * log_m - (alpha + k) * l1p - math.lgamma(k + 1.0))
        fk = np.exp(lfk)
        S = S - fk
        dS_a = dS_a - fk * (float(_dpsi_scaled(alpha, k)) - alpha * l1p + alpha * (m - k) / (alpha + m))
        dS_m = dS_m - fk * alpha * (k - m) / (alpha + m)
    with np.errstate(divide="ignore", invalid="ignore"):
        logS = np.log(S)
        return logf, dla, dlm, logS, dS_a / S, dS_m / S


#: cap of the exponent in the mixing weight's gradient: e^600 times the summed weights of any real table stays far
#: below the float64 maximum (e^709.8), so the gradient is a huge but finite slope and its sum cannot overflow
_EXP_CAP = 600.0


def _negll_x(x, d: _Data, likelihood: str) -> tuple[float, np.ndarray]:
    """−log-likelihood and its gradient with respect to x = (log α1, log μ1, log α2, log μ2, P)."""
    a1, m1, a2, m2 = (math.exp(float(v)) for v in x[:4])
    p = min(max(float(x[4]), 0.0), 1.0)
    trunc = likelihood != "zero-inclusive"
    l1, da1, dm1, s1, dsa1, dsm1 = _component(a1, m1, d, trunc)
    l2, da2, dm2, s2, dsa2, dsm2 = _component(a2, m2, d, trunc)
    with np.errstate(divide="ignore"):
        lp, lq = math.log(p) if p > 0 else -math.inf, math.log1p(-p) if p < 1 else -math.inf
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if likelihood == "openebgm":
            l1, l2 = l1 - s1, l2 - s2
            da1, dm1, da2, dm2 = da1 - dsa1, dm1 - dsm1, da2 - dsa2, dm2 - dsm2
        lm = np.logaddexp(lp + l1, lq + l2)
        r1 = np.exp(lp + l1 - lm)
        r2 = np.exp(lq + l2 - lm)
        # ∂/∂P = (f1 − f2)/mixture; finite even at P = 0 or 1 (exponent capped: a huge slope is still a slope)
        grads = [r1 * da1, r1 * dm1, r2 * da2, r2 * dm2,
                 np.exp(np.minimum(l1 - lm, _EXP_CAP)) - np.exp(np.minimum(l2 - lm, _EXP_CAP))]
        ll = lm
        if likelihood == "conditional":
            ld = np.logaddexp(lp + s1, lq + s2)
            t1 = np.exp(lp + s1 - ld)
            t2 = np.exp(lq + s2 - ld)
            grads[0] = grads[0] - t1 * dsa1
            grads[1] = grads[1] - t1 * dsm1
            grads[2] = grads[2] - t2 * dsa2
            grads[3] = grads[3] - t2 * dsm2
            grads[4] = grads[4] - (np.exp(np.minimum(s1 - ld, _EXP_CAP)) - np.exp(np.minimum(s2 - ld, _EXP_CAP)))
            ll = lm - ld
    w = d.w
    # plain reductions, not BLAS dot: BLAS threads cost more than they give on a busy box
    value = -(float(np.add.reduce(w * ll)) + d.const)
    grad = -np.array([float(np.add.reduce(w * g)) for g in grads])
    return value, grad


def _to_x(theta) -> np.ndarray:
    a1, b1, a2, b2, p = (float(t) for t in theta)
    return np.array([math.log(a1), math.log(a1 / b1), math.log(a2), math.log(a2 / b2), p])


def _to_theta(x) -> np.ndarray:
    a1, m1, a2, m2 = (math.exp(float(v)) for v in x[:4])
    return np.array([a1, a1 / m1, a2, a2 / m2, min(max(float(x[4]), 0.0), 1.0)])


def _negll_grad(theta, d: _Data, likelihood: str) -> tuple[float, np.ndarray]:
    """−log-likelihood and its gradient with respect to θ = (α1, β1, α2, β2, P) (chain rule from x)."""
    theta = np.asarray(theta, dtype=np.float64)
    value, g = _negll_x(_to_x(theta), d, likelihood)
    a1, b1, a2, b2, _ = theta
    # log μ = log α − log β: ∂/∂α = (g_logα + g_logμ)/α, ∂/∂β = −g_logμ/β
    return value, np.array([(g[0] + g[1]) / a1, -g[1] / b1, (g[2] + g[3]) / a2, -g[3] / b2, g[4]])


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


def _objective(x, d, likelihood, scale):
    value, g = _negll_x(x, d, likelihood)
    if not np.isfinite(value) or not np.all(np.isfinite(g)):
        return 1e300, np.zeros(5)
    return value / scale, g / scale


# ----------------------------------------------------------------------------------------------------------
# fit result
# ----------------------------------------------------------------------------------------------------------

@dataclass
class MgpsFit:
    """A fitted MGPS prior with everything a manifest needs (:meth:`as_dict`).

    ``converged``: the optimiser reached a finite maximum of the likelihood (possibly on the boundary: see
    ``boundary``). ``agreement``: another start reached the same −log L and the same EBGM/EB05 (tolerances
    :data:`AGREEMENT`); False is a warning, not a reason to withhold EBGM. EBGM is published whenever θ is finite
    (:attr:`published`).
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
    spread: dict[str, Any] = field(default_factory=dict)
    messages: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    agreement: bool | None = None
    boundary: list[str] = field(default_factory=list)

    @property
    def neg_loglik(self) -> float:
        return -self.loglik

    @property
    def published(self) -> bool:
        """EBGM/EB05/EB95 are computed from this prior (θ and the likelihood finite)."""
        return bool(np.all(np.isfinite(self.theta)) and math.isfinite(self.loglik))

    def as_dict(self) -> dict[str, Any]:
        names = ("alpha1", "beta1", "alpha2", "beta2", "p")
        a1, b1, a2, b2, _ = self.theta
        with np.errstate(invalid="ignore", divide="ignore"):
            mu = {"mu1": _finite(a1 / b1) if b1 else None, "mu2": _finite(a2 / b2) if b2 else None}
        return {
            "model": "MGPS two-gamma mixture (DuMouchel 1999), fitted in mean-shape form",
            "likelihood": self.likelihood,
            "n_star": self.n_star,
            "theta": dict(zip(names, (_finite(t) for t in self.theta))),
            "component_means": mu,
            "neg_loglik": _finite(-self.loglik),
            "converged": bool(self.converged),
            "published": self.published,
            "agreement": self.agreement,
            "agreement_rule": "another start within |d(-logL)| <= {neg_loglik} and max relative difference of EBGM "
                              "<= {ebgm} and of EB05 <= {eb05} over all points".format(**AGREEMENT),
            "boundary": list(self.boundary),
            "n_points": int(self.n_points),
            "n_cells": int(self.n_cells),
            "n_zero_cells": int(self.n_zero_cells),
            "starts": jsonable(self.starts),
            "spread": jsonable(self.spread),
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
                   n_points=d.get("n_points", 0), warnings=list(d.get("warnings", [])),
                   agreement=d.get("agreement"), boundary=list(d.get("boundary", [])))


def _finite(x) -> float | None:
    """JSON-safe float: None for NaN/inf (manifests must stay valid JSON)."""
    x = float(x)
    return x if math.isfinite(x) else None




def _boundary(theta: np.ndarray, x: np.ndarray) -> list[str]:
    """Where the optimum sits on the edge of the parameter space (a valid answer, recorded)."""
    a1, b1, a2, b2, p = theta
    out = []
    for k, (a, b, lx) in enumerate(((a1, b1, x[0]), (a2, b2, x[2])), start=1):
        w = p if k == 1 else 1.0 - p
        if w <= 1e-6:
            continue  # an unused component has no boundary of its own
        if a > POINT_MASS_ALPHA:
            out.append(f"component {k} is a point mass at lambda = {a / b:.6g} (alpha{k} = {a:.3g} -> inf with "
                       f"the mean fixed; its negative binomial is Poisson(n; lambda*E))")
        elif lx <= LOG_ALPHA_BOUNDS[0] + 1e-6:
            out.append(f"alpha{k} at its lower bound {math.exp(LOG_ALPHA_BOUNDS[0]):.3g}")
        mu_x = x[1] if k == 1 else x[3]
        if mu_x <= LOG_MU_BOUNDS[0] + 1e-6 or mu_x >= LOG_MU_BOUNDS[1] - 1e-6:
            out.append(f"mean of component {k} at a bound of the optimiser's box ({a / b:.3g})")
    if p <= 1e-6 or p >= 1 - 1e-6:
        out.append(f"P = {p:.3g}: one component carries all the weight (a one-gamma prior)")
    elif abs(a1 / b1 - a2 / b2) <= 1e-3 * max(a1 / b1, a2 / b2) and abs(a1 - a2) <= 1e-3 * max(a1, a2):
        out.append("the two components coincide (a one-gamma prior)")
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


def _clip(x) -> np.ndarray:
    lo = np.array([b[0] for b in _BOUNDS])
    hi = np.array([b[1] for b in _BOUNDS])
    return np.clip(np.asarray(x, dtype=np.float64), lo, hi)


def _lbfgsb(d, likelihood, scale, x0, maxiter, ftol=1e-13):
    return optimize.minimize(_objective, _clip(x0), args=(d, likelihood, scale), jac=True, method="L-BFGS-B",
                             bounds=_BOUNDS, options={"maxiter": maxiter, "ftol": ftol, "gtol": 1e-9})


def _stalled_ok(r) -> bool:
    """A line-search stop at a flat optimum (tiny projected gradient) is convergence, not failure."""
    if r.success:
        return True
    if "ABNORMAL" not in str(r.message).upper() or not np.isfinite(r.fun):
        return False
    x, g = np.asarray(r.x), np.asarray(r.jac)
    lo = np.array([b[0] for b in _BOUNDS])
    hi = np.array([b[1] for b in _BOUNDS])
    free = ~(((x <= lo + 1e-10) & (g > 0)) | ((x >= hi - 1e-10) & (g < 0)))
    return bool(np.max(np.abs(g[free]), initial=0.0) < 1e-5)


def _summaries(theta, n, e) -> tuple[np.ndarray, np.ndarray]:
    q = _qn(theta, n, e)
    return ebgm(theta, n, e, q), eb_quantile(theta, n, e, 0.05, q)


def _max_rel(x: np.ndarray, y: np.ndarray) -> float:
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.abs(x - y) / np.maximum(np.abs(x), np.abs(y))
    r = np.where((x == y), 0.0, r)
    return float(np.nanmax(r)) if r.size else 0.0


def fit_points(points: MgpsPoints, likelihood: str = "openebgm", n_star: int = 1,
               starts=DEFAULT_STARTS, maxiter: int = 1000) -> MgpsFit:
    """Fit θ on grouped points; see :func:`fit_mgps`.

    Every start runs L-BFGS-B on x = (log α1, log μ1, log α2, log μ2, P) with an analytic gradient. With more
    than :data:`EXPLORE_MAX_POINTS` distinct points the starts run on a binned copy (E pooled within ±1 %) and the
    best one is re-optimised on the exact points, so the accepted θ maximises the exact likelihood. The best is
    polished with Nelder–Mead; the other starts are then compared with it by −log L and by EBGM/EB05 over all
    points (:data:`AGREEMENT`; above :data:`EXPLORE_MAX_POINTS` points, over the binned copy).
    """
    with _single_blas_thread():
        return _fit_points(points, likelihood, n_star, starts, maxiter)


def _fit_points(points, likelihood, n_star, starts, maxiter) -> MgpsFit:
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
        ok = _stalled_ok(r) and r.fun < 1e299
        results.append({"start": [float(v) for v in s], "theta": [float(v) for v in _to_theta(r.x)],
                        "neg_loglik": float(r.fun * scale), "converged": ok, "iterations": int(r.nit),
                        "message": str(r.message), "x": np.asarray(r.x)})
    messages += [f"start {i + 1}: {r['message']} ({r['iterations']} it)" for i, r in enumerate(results)]
    if any("ITERATIONS REACHED LIMIT" in r["message"].upper() for r in results):
        warnings.append("iteration limit hit in at least one start")
    pool = [r for r in results if np.isfinite(r["neg_loglik"]) and r["neg_loglik"] < 1e299]
    if not pool:
        warnings.append("no start gave a finite likelihood")
        return MgpsFit(theta=(math.nan,) * 5, loglik=math.nan, converged=False, likelihood=likelihood,
                       n_star=n_star, n_points=len(points), n_cells=points.n_cells,
                       n_zero_cells=points.n_zero_cells, starts=_clean(results), messages=messages,
                       warnings=warnings, seconds=time.perf_counter() - t0)
    best = min(pool, key=lambda r: r["neg_loglik"])
    converged = bool(best["converged"])
    # Nelder–Mead polish from a small simplex (on the exploration points when staged: the exact refinement
    # below then finishes on the exact likelihood); kept only if it improves.
    x_best, f_best = best["x"], best["neg_loglik"]
    simplex = np.vstack([x_best] + [_clip(x_best + 1e-3 * np.eye(5)[i] * (1 if x_best[i] < 0.5 else -1))
                                    for i in range(5)])
    nm = optimize.minimize(lambda x: _objective(_clip(x), d_explore, likelihood, scale)[0],
                           x_best, method="Nelder-Mead",
                           options={"maxfev": 300 if staged else 1000, "xatol": 1e-8, "fatol": 1e-14,
                                    "initial_simplex": simplex})
    if nm.fun * scale < f_best:
        x_best = _clip(nm.x)
    messages.append(f"nelder-mead polish: {nm.message} ({nm.nit} it, -logL {f_best:.10g} -> "
                    f"{min(nm.fun * scale, f_best):.10g})")
    x_final = x_best
    if staged:
        r = _lbfgsb(d, likelihood, scale, x_best, maxiter)
        messages.append(f"exact refinement (L-BFGS-B): {r.message} ({r.nit} it)")
        if not _stalled_ok(r):
            warnings.append(f"exact refinement did not converge: {r.message}")
            converged = False
        x_final = r.x
    theta = _to_theta(x_final)
    value = _negll_x(x_final, d, likelihood)[0]
    f_explore = min(f_best, nm.fun * scale)
    if not np.isfinite(value):
        converged = False

    # agreement: the other converged starts against the accepted optimum, by −log L and by EBGM/EB05
    # summaries over every distinct (N, E) point with N >= 1 (on a large table: its binned copy, E within ±1 %)
    ps = d_explore if staged else d
    sel = ps.n >= 1 if np.any(ps.n >= 1) else np.ones(ps.n.size, bool)
    pn, pe = ps.n[sel], ps.e[sel]
    gm_best, lo_best = _summaries(theta, pn, pe)
    agreement = False
    for r in results:
        r["delta_neg_loglik"] = None
        if r is best or not r["converged"] or agreement:  # one agreeing start is enough: spare the rest
            continue
        # −log L on the objective the starts were optimised on (the binned copy when staged)
        r["delta_neg_loglik"] = float(r["neg_loglik"] - f_explore)
        if abs(r["delta_neg_loglik"]) > AGREEMENT["neg_loglik"]:
            continue
        gm, lo = _summaries(_to_theta(r["x"]), pn, pe)
        r["ebgm_max_rel_diff"], r["eb05_max_rel_diff"] = _max_rel(gm, gm_best), _max_rel(lo, lo_best)
        r["agrees"] = r["ebgm_max_rel_diff"] <= AGREEMENT["ebgm"] and r["eb05_max_rel_diff"] <= AGREEMENT["eb05"]
        agreement = agreement or r["agrees"]
    boundary = _boundary(theta, _clip(x_final))
    warnings += [f"boundary: {b}" for b in boundary]
    if not converged:
        warnings.append("the optimiser did not report convergence at the best start; EBGM is computed from the "
                        "best likelihood found")
    if not agreement:
        warnings.append("no other start reached the same likelihood and EBGM/EB05 (within "
                        f"{AGREEMENT['neg_loglik']} in -logL, {AGREEMENT['ebgm']:.0%} in EBGM and EB05); EBGM is "
                        "published from the best likelihood")
    conv = [r for r in results if r["converged"]]
    spread = {"n_converged": len(conv), "n_starts": len(results), "staged": staged,
              "n_agreeing": sum(bool(r.get("agrees")) for r in results)}
    if conv:
        lls = np.array([r["neg_loglik"] for r in conv])
        spread["neg_loglik_range"] = float(lls.max() - lls.min())
        compared = [r for r in conv if r.get("ebgm_max_rel_diff") is not None]
        if compared:
            spread["ebgm_max_rel_diff"] = max(r["ebgm_max_rel_diff"] for r in compared)
            spread["eb05_max_rel_diff"] = max(r["eb05_max_rel_diff"] for r in compared)
    for w_ in warnings:
        log.warning("MGPS (%s): %s", likelihood, w_)
    return MgpsFit(theta=tuple(float(t) for t in theta), loglik=-float(value), converged=converged,
                   likelihood=likelihood, n_star=n_star, n_points=len(points), n_cells=points.n_cells,
                   n_zero_cells=points.n_zero_cells, starts=_clean(results), spread=spread, messages=messages,
                   warnings=warnings, seconds=time.perf_counter() - t0, agreement=agreement, boundary=boundary)


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
    """Fit the MGPS two-gamma prior on a counts table (drug, event, a, n_drug, n_event, n_total[, expected]).

    Parameters
    ----------
    counts : pandas.DataFrame or pyarrow.Table
        Non-zero pairs of the whole background (every drug × event of the database). An ``expected`` column
        (e.g. a stratified E) replaces n_drug·n_event/n_total.
    likelihood : str, one of :data:`LIKELIHOODS` (openebgm, conditional, zero-inclusive)
        See the module docstring.
    n_star : int
        Truncation point N* of the truncated likelihoods (pairs with a ≥ N* are used).
    starts : sequence of θ
        Starting values; default: openEBGM's three vignette starts, DuMouchel's FDA-SRS prior and a start with a
        concentrated component at λ = 1.

    Returns
    -------
    MgpsFit

    References
    ----------
    DuMouchel W. Bayesian data mining in large frequency tables, with an application to the FDA spontaneous
    reporting system. Am Stat 1999;53:177-190. doi:10.1080/00031305.1999.10474456
    Canida T, Ihrie J. openEBGM: An R implementation of the Gamma-Poisson Shrinker data mining model. R J
    2017;9:499-519 (multi-start ``autoHyper``).
    """
    points = group_points(counts, likelihood, n_star)
    return fit_points(points, likelihood, n_star if likelihood != "zero-inclusive" else 0, starts)


# ----------------------------------------------------------------------------------------------------------
# posterior
# ----------------------------------------------------------------------------------------------------------

def _qn(theta, n, e):
    """Posterior weight of component 1 (untruncated densities; the shared n·log E − lgamma(n+1) cancels)."""
    a1, b1, a2, b2, p = (float(t) for t in theta)
    n = np.asarray(n, dtype=np.float64)
    e = np.asarray(e, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        l1 = (math.log(p) if p > 0 else -math.inf) + nb_logpmf(n, a1, a1 / b1, e)
        l2 = (math.log1p(-p) if p < 1 else -math.inf) + nb_logpmf(n, a2, a2 / b2, e)
        return np.exp(l1 - np.logaddexp(l1, l2))


def _log_gm_component(alpha: float, beta: float, n, e):
    """E[ln λ] of the posterior gamma (α + n, β + E): ψ(α+n) − log(β+E), stable for a point-mass component."""
    mu = alpha / beta
    return (_psi_minus_log(alpha + n) + math.log(mu) + np.log1p(n / alpha) - np.log1p(mu * e / alpha))


def ebgm(theta, n, e, qn=None) -> np.ndarray:
    """Empirical-Bayes geometric mean exp(E[ln λ | N]) under the two-gamma prior θ.

    Uses the untruncated component densities for the mixing weight Qn (DuMouchel 1999 eq. 6; openEBGM ``Qn``).

    References
    ----------
    DuMouchel W. Am Stat 1999;53:177-190.
    """
    a1, b1, a2, b2, _ = (float(t) for t in theta)
    n = np.asarray(n, dtype=np.float64)
    e = np.asarray(e, dtype=np.float64)
    q = _qn(theta, n, e) if qn is None else qn
    g1, g2 = _log_gm_component(a1, b1, n, e), _log_gm_component(a2, b2, n, e)
    # a component with zero posterior weight contributes nothing (0·x, never 0·inf)
    return np.exp(np.where(q > 0, q * g1, 0.0) + np.where(q < 1, (1.0 - q) * g2, 0.0))


def eb_quantile(theta, n, e, prob: float, qn=None, rtol: float = 1e-8, maxiter: int = 200) -> np.ndarray:
    """Quantile ``prob`` of the posterior mixture of gammas, solved to |Δx| ≤ rtol·x.

    The root of Qn·G(x; α1+N, β1+E) + (1−Qn)·G(x; α2+N, β2+E) = prob lies between the two components' own
    quantiles, which gives a tight bracket; safeguarded Newton steps in log x (bisection when a step leaves the
    bracket) converge in a few vectorised iterations. A row stops when the bracket is narrower than rtol in log x
    or a Newton step is below rtol/10 (quadratic convergence: the error is then far below rtol). The density is
    evaluated in Loader's deviance form, so a point-mass component (α ≈ 1e15) stays accurate.

    References
    ----------
    DuMouchel W. Am Stat 1999;53:177-190 (EB05 as the 5th percentile of the posterior of λ).
    """
    a1, b1, a2, b2, _ = (float(t) for t in theta)
    n = np.asarray(n, dtype=np.float64)
    e = np.asarray(e, dtype=np.float64)
    q = _qn(theta, n, e) if qn is None else np.asarray(qn, dtype=np.float64)
    mu1, mu2 = a1 / b1, a2 / b2
    # shape-only terms once per distinct N
    from .frequentist import unique_sorted

    un, inv = unique_sorted(n, return_inverse=True)
    inv = inv.reshape(n.shape)
    g1, g2 = special.gammaincinv(a1 + un, prob)[inv], special.gammaincinv(a2 + un, prob)[inv]
    s1, s2 = a1 + n, a2 + n
    # rates β + E = (α + μE)/μ, in logs
    lr1 = np.log(a1 + mu1 * e) - math.log(mu1)
    lr2 = np.log(a2 + mu2 * e) - math.log(mu2)
    x1, x2 = np.log(g1) - lr1, np.log(g2) - lr2
    lo, hi = np.minimum(x1, x2), np.maximum(x1, x2)
    x = np.where(q >= 0.5, x1, x2)
    act = np.flatnonzero((hi - lo) > rtol)
    for _ in range(maxiter):
        if act.size == 0:
            break
        xa, qa, loa, hia = x[act], q[act], lo[act], hi[act]
        y1, y2 = np.exp(lr1[act] + xa), np.exp(lr2[act] + xa)
        F = qa * special.gammainc(s1[act], y1) + (1.0 - qa) * special.gammainc(s2[act], y2) - prob
        # density of the mixture with respect to log x
        dens = (qa * np.exp(_log_gamma_density_logx(s1[act], y1))
                + (1.0 - qa) * np.exp(_log_gamma_density_logx(s2[act], y2)))
        below = F < 0
        loa = np.where(below, xa, loa)
        hia = np.where(below, hia, xa)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
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
