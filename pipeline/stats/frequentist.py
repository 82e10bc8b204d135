"""Frequentist disproportionality statistics on named 2×2 cells.

Every function takes the cells ``a`` (drug & event), ``b`` (drug, not event), ``c`` (event, not drug) and ``d``
(neither) as int64 arrays of equal length and returns float64 arrays. Undefined values are whatever IEEE arithmetic
gives for the formula (NaN or ±inf); nothing is corrected silently. The only correction is the explicit
``haldane`` option of :func:`prr` and :func:`ror`, applied to the rows where that statistic is undefined.

One module for all of them (longer than the others): each measure is a short function with its interval and
references, and they share the cell conventions above.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

__all__ = [
    "as_cells", "z_value", "expected", "prr", "ror", "chi2_pearson", "chi2_yates", "fisher_one_sided",
    "bh_qvalues", "bh_qvalues_by", "ic_noren",
]


def as_cells(a, b, c, d) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return the four cells as 1-d int64 arrays (broadcast to a common length)."""
    arrs = np.broadcast_arrays(*(np.atleast_1d(np.asarray(x)) for x in (a, b, c, d)))
    out = []
    for x in arrs:
        if x.dtype.kind == "f":
            if not np.all(np.isfinite(x) & (x == np.round(x))):
                raise ValueError("2x2 cells must be whole numbers")
        out.append(x.astype(np.int64, copy=False))
    return tuple(out)  # type: ignore[return-value]


def z_value(confidence_level: float = 0.95) -> float:
    """Two-sided normal quantile, e.g. 1.959963984540054 for 0.95."""
    if not 0.0 < confidence_level < 1.0:
        raise ValueError(f"confidence_level must be in (0, 1), got {confidence_level}")
    return float(special.ndtri(0.5 + confidence_level / 2.0))


def expected(a, b, c, d) -> np.ndarray:
    """Expected count under independence, E = n_drug · n_event / n_total (float64, no 32-bit overflow).

    References
    ----------
    DuMouchel W. Bayesian data mining in large frequency tables. Am Stat 1999;53:177-190.
    """
    a, b, c, d = as_cells(a, b, c, d)
    n = (a + b + c + d).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (a + b).astype(np.float64) * (a + c).astype(np.float64) / n


def _log_ratio_ci(log_est: np.ndarray, se: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.errstate(invalid="ignore", over="ignore"):
        return np.exp(log_est), np.exp(log_est - z * se), np.exp(log_est + z * se)


def _prr_raw(a, b, c, d, z):
    a, b, c, d = (np.asarray(x, dtype=np.float64) for x in (a, b, c, d))
    with np.errstate(divide="ignore", invalid="ignore"):
        log_prr = np.log(a / (a + b)) - np.log(c / (c + d))
        se = np.sqrt(1.0 / a - 1.0 / (a + b) + 1.0 / c - 1.0 / (c + d))
    return _log_ratio_ci(log_prr, se, z)


def prr(a, b, c, d, confidence_level: float = 0.95, haldane: bool = False):
    """Proportional reporting ratio with the Katz log-scale confidence interval.

    PRR = [a/(a+b)] / [c/(c+d)], SE(ln PRR) = sqrt(1/a - 1/(a+b) + 1/c - 1/(c+d)).
    a = 0 gives 0 [0, NaN]; c = 0 gives inf [NaN, inf].

    Parameters
    ----------
    a, b, c, d : array_like of int
        The 2×2 cells.
    confidence_level : float
        Two-sided level of the interval.
    haldane : bool
        If true, add 0.5 to all four cells, but only on rows where c = 0 (PRR undefined).

    Returns
    -------
    prr, lo, hi : ndarray of float64

    References
    ----------
    Evans SJW, Waller PC, Davis S. Use of proportional reporting ratios (PRRs) for signal generation from
    spontaneous adverse drug reaction reports. Pharmacoepidemiol Drug Saf 2001;10:483-486.
    Katz D, Baptista J, Azen SP, Pike MC. Obtaining confidence intervals for the risk ratio in cohort studies.
    Biometrics 1978;34:469-474.
    """
    a, b, c, d = as_cells(a, b, c, d)
    z = z_value(confidence_level)
    est, lo, hi = _prr_raw(a, b, c, d, z)
    if haldane:
        rows = c == 0
        if rows.any():
            h = [x[rows] + 0.5 for x in (a, b, c, d)]
            est[rows], lo[rows], hi[rows] = _prr_raw(*h, z)
    return est, lo, hi


def _ror_raw(a, b, c, d, z):
    a, b, c, d = (np.asarray(x, dtype=np.float64) for x in (a, b, c, d))
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ror = np.log(a) + np.log(d) - np.log(b) - np.log(c)
        se = np.sqrt(1.0 / a + 1.0 / b + 1.0 / c + 1.0 / d)
    return _log_ratio_ci(log_ror, se, z)


def ror(a, b, c, d, confidence_level: float = 0.95, haldane: bool = False):
    """Reporting odds ratio with the Woolf (log-scale Wald) confidence interval.

    ROR = ad/(bc), SE(ln ROR) = sqrt(1/a + 1/b + 1/c + 1/d). a = 0 gives 0 [0, NaN]; b·c = 0 gives
    inf [NaN, inf].

    Parameters
    ----------
    a, b, c, d : array_like of int
        The 2×2 cells.
    confidence_level : float
        Two-sided level of the interval.
    haldane : bool
        If true, add 0.5 to all four cells, but only on rows where b·c = 0 (ROR undefined).

    Returns
    -------
    ror, lo, hi : ndarray of float64

    References
    ----------
    Woolf B. On estimating the relation between blood group and disease. Ann Hum Genet 1955;19:251-253.
    van Puijenbroek EP et al. A comparison of measures of disproportionality for signal detection in spontaneous
    reporting systems for adverse drug reactions. Pharmacoepidemiol Drug Saf 2002;11:3-10.
    """
    a, b, c, d = as_cells(a, b, c, d)
    z = z_value(confidence_level)
    est, lo, hi = _ror_raw(a, b, c, d, z)
    if haldane:
        rows = (b == 0) | (c == 0)
        if rows.any():
            h = [x[rows] + 0.5 for x in (a, b, c, d)]
            est[rows], lo[rows], hi[rows] = _ror_raw(*h, z)
    return est, lo, hi


def _chi2_parts(a, b, c, d):
    n = (a + b + c + d).astype(np.float64)
    # ad - bc in exact int64 (|ad| <= N^2/4 stays far below 2^63 for any realistic N), then float64.
    diff = np.abs((a * d - b * c).astype(np.float64))
    denom = ((a + b).astype(np.float64) * (c + d).astype(np.float64)
             * (a + c).astype(np.float64) * (b + d).astype(np.float64))
    return n, diff, denom


def chi2_pearson(a, b, c, d) -> np.ndarray:
    """Pearson χ² (1 df) without continuity correction: N(ad − bc)² / [(a+b)(c+d)(a+c)(b+d)].

    NaN when any margin is empty.

    References
    ----------
    Pearson K. On the criterion that a given system of deviations ... Philos Mag 1900;50:157-175.
    """
    a, b, c, d = as_cells(a, b, c, d)
    n, diff, denom = _chi2_parts(a, b, c, d)
    with np.errstate(divide="ignore", invalid="ignore"):
        return n * diff * diff / denom


def chi2_yates(a, b, c, d) -> np.ndarray:
    """Yates-corrected χ² exactly as R ``chisq.test(correct=TRUE)``.

    R subtracts min(0.5, |O − E|) per cell, i.e. N(|ad − bc| − min(N/2, |ad − bc|))² / [(a+b)(c+d)(a+c)(b+d)];
    0 when |ad − bc| ≤ N/2, NaN when a margin is empty.

    References
    ----------
    Yates F. Contingency tables involving small numbers and the χ² test. Suppl J R Stat Soc 1934;1:217-235.
    R Core Team. ``stats::chisq.test`` source (correction capped at |O - E|).
    """
    a, b, c, d = as_cells(a, b, c, d)
    n, diff, denom = _chi2_parts(a, b, c, d)
    corr = diff - np.minimum(n / 2.0, diff)
    with np.errstate(divide="ignore", invalid="ignore"):
        return n * corr * corr / denom


def unique_sorted(x, return_inverse: bool = False, return_counts: bool = False):
    """``np.unique`` by one stable sort and a neighbour comparison (numpy's own ``unique`` costs ~40x more CPU on
    a million int64 keys in this environment)."""
    x = np.asarray(x).ravel()
    order = np.argsort(x, kind="stable")
    xs = x[order]
    flag = np.empty(xs.size, dtype=bool)
    flag[:1] = True
    np.not_equal(xs[1:], xs[:-1], out=flag[1:])
    u = xs[flag]
    out = [u]
    if return_inverse:
        inv = np.empty(x.size, dtype=np.int64)
        inv[order] = np.cumsum(flag) - 1
        out.append(inv)
    if return_counts:
        out.append(np.diff(np.r_[np.flatnonzero(flag), xs.size]))
    return u if len(out) == 1 else tuple(out)


def _unique_rows(*cols: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Distinct rows of non-negative int64 columns and the inverse index, without a Python loop.

    Columns are bit-packed into one int64 key when they fit (the usual case: N constant, counts < 2^20), which is
    an order of magnitude faster than hashing tuples.
    """
    import pandas as pd

    cols = [np.asarray(c, dtype=np.int64) for c in cols]
    if cols[0].size == 0:
        return [c.copy() for c in cols], np.zeros(0, dtype=np.int64)
    codes_list, levels = [], []
    for c in cols:
        lo, hi = int(c.min()), int(c.max())
        if lo >= 0 and hi < (1 << 40):
            codes_list.append(c)
            levels.append(None)
        else:
            code, uniq = pd.factorize(c)
            codes_list.append(code.astype(np.int64))
            levels.append(uniq)
    bits = [max(int(c.max()).bit_length(), 1) for c in codes_list]
    if sum(bits) <= 63:
        key = np.zeros(cols[0].shape, dtype=np.int64)
        for c, nb in zip(codes_list, bits):
            key = (key << nb) | c
        inverse, uniq_key = pd.factorize(key)
        first = np.zeros(uniq_key.size, dtype=np.int64)
        first[inverse[::-1]] = np.arange(key.size - 1, -1, -1)  # any representative row per key
        return [c[first] for c in cols], inverse.astype(np.int64)
    codes, uniq = pd.MultiIndex.from_arrays(cols).factorize()
    return [np.asarray(uniq.get_level_values(i), dtype=np.int64) for i in range(len(cols))], codes


# Loader's saddle-point method (C. Loader, "Fast and accurate computation of binomial probabilities", 2000):
# log-gamma differences of numbers ~1e7 lose ~1e-8 relative in the probability; these forms keep ~1e-14.
_STIRLERR_SMALL = np.array([math.lgamma(i + 1.0) - (i + 0.5) * math.log(i) + i - 0.5 * math.log(2 * math.pi)
                            if i else 0.0 for i in range(16)])


def _stirlerr(n: np.ndarray) -> np.ndarray:
    """log(n!) − log(√(2π n)(n/e)^n) for integer-valued n ≥ 0."""
    out = np.empty_like(n)
    small = n <= 15
    out[small] = _STIRLERR_SMALL[n[small].astype(np.int64)]
    x = n[~small]
    nn = x * x
    s0, s1, s2, s3, s4 = 1 / 12, 1 / 360, 1 / 1260, 1 / 1680, 1 / 1188
    out[~small] = (s0 - (s1 - (s2 - (s3 - s4 / nn) / nn) / nn) / nn) / x
    return out


def _bd0(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Deviance term x·log(x/m) + m − x, accurate when x ≈ m."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = x * np.log(x / m) + m - x
    out = np.where(x == 0, m, out)
    near = np.flatnonzero(np.abs(x - m) < 0.1 * (x + m))
    if near.size:
        xs, ms = x[near], m[near]
        v = (xs - ms) / (xs + ms)
        s = (xs - ms) * v
        ej = 2.0 * xs * v
        v2 = v * v
        for j in range(1, 60):  # |v| < 0.1: 1e-17 after well under 20 terms
            ej = ej * v2
            term = ej / (2 * j + 1)
            s = s + term
            if not np.any(np.abs(term) > 1e-17 * np.abs(s)):  # every row converged: stop early
                break
        out[near] = s
    return out


def _log_dbinom(x: np.ndarray, n: np.ndarray, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """log binomial probability (Loader 2000), vectorised; x, n integer-valued floats with 0 ≤ x ≤ n."""
    out = np.empty(x.shape)
    mid = (x > 0) & (x < n)
    i = np.flatnonzero(mid)
    xi, ni = x[i], n[i]
    out[i] = (_stirlerr(ni) - _stirlerr(xi) - _stirlerr(ni - xi) - _bd0(xi, ni * p[i]) - _bd0(ni - xi, ni * q[i])
              - 0.5 * (math.log(2 * math.pi) + np.log(xi) + np.log1p(-xi / ni)))
    i = np.flatnonzero((x == 0) & (n > 0))
    ni, pi, qi = n[i], p[i], q[i]
    with np.errstate(divide="ignore"):
        out[i] = np.where(pi < 0.1, -_bd0(ni, ni * qi) - ni * pi, ni * np.log(qi))
    i = np.flatnonzero((x == n) & (n > 0))
    ni, pi, qi = n[i], p[i], q[i]
    with np.errstate(divide="ignore"):
        out[i] = np.where(qi < 0.1, -_bd0(ni, ni * pi) - ni * qi, ni * np.log(pi))
    out[n == 0] = 0.0
    return out


def hypergeom_logpmf(k, N, K, n) -> np.ndarray:
    """log P(X = k), X ~ hypergeometric(population N, K successes, n draws), to ~1e-14 relative in P.

    References
    ----------
    Loader C. Fast and accurate computation of binomial probabilities. 2000 (R ``dhyper``'s method).
    """
    k, N, K, n = (np.atleast_1d(np.asarray(x, dtype=np.float64)) for x in (k, N, K, n))
    k, N, K, n = np.broadcast_arrays(k, N, K, n)
    bad = (k < 0) | (k > K) | (n - k > N - K) | (k > n)
    kk = np.where(bad, 0.0, k)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = n / N
        q = (N - n) / N
        # dbinom(n; N, n/N): both deviance terms vanish at the mode
        m = (n > 0) & (n < N)
        denom = np.zeros(N.shape)
        denom[m] = (_stirlerr(N[m]) - _stirlerr(n[m]) - _stirlerr(N[m] - n[m])
                    - 0.5 * (math.log(2 * math.pi) + np.log(n[m]) + np.log1p(-n[m] / N[m])))
        out = _log_dbinom(kk, K, p, q) + _log_dbinom(n - kk, N - K, p, q) - denom
    return np.where(bad, -np.inf, out)


def _ratio_series(A, B, C, D, tol: float = 2.0 ** -56) -> np.ndarray:
    """Σ_{j≥1} Π_{i<j} (A−i)(B−i)/((C+i)(D+i)), vectorised; stops per row when a term is < tol·(1 + sum).

    A factor ≤ 0 means the end of the support (the series ends there).
    """
    out = np.zeros(A.shape)
    idx = np.arange(A.size)
    A, B, C, D = A.copy(), B.copy(), C.copy(), D.copy()
    term = np.ones(A.shape)
    acc = np.zeros(A.shape)
    while idx.size:
        r = A * B / (C * D)
        term *= np.where(r > 0, r, 0.0)
        acc += term
        A -= 1.0
        B -= 1.0
        C += 1.0
        D += 1.0
        keep = term > tol * (1.0 + acc)
        if not keep.all():
            out[idx[~keep]] = acc[~keep]
            idx, A, B, C, D, term, acc = (x[keep] for x in (idx, A, B, C, D, term, acc))
    return out


def _hypergeom_tails(k, N, K, n) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """pmf(k), P(X > k) and P(X < k) of X ~ hypergeometric(N, K, n), vectorised.

    pmf(k) comes from :func:`hypergeom_logpmf` (Loader's method). The tail on the far side of the mean is summed
    with the exact term ratios pmf(j+1)/pmf(j) = (K−j)(n−j)/[(j+1)(N−K−n+j+1)] (or the reverse ratio), whose
    terms shrink geometrically there; the other tail is 1 − that − pmf(k), which is then ≥ about 1/2.
    """
    k, N, K, n = (np.asarray(x, dtype=np.float64) for x in (k, N, K, n))
    pmf = np.exp(hypergeom_logpmf(k, N, K, n))
    upper = k * N > n * K  # k above the mean nK/N
    short = np.zeros_like(pmf)
    u = np.flatnonzero(upper & (pmf > 0))
    ku, Nu, Ku, nu = k[u], N[u], K[u], n[u]
    short[u] = _ratio_series(Ku - ku, nu - ku, ku + 1.0, Nu - Ku - nu + ku + 1.0)
    lw = np.flatnonzero(~upper & (pmf > 0))
    kl, Nl, Kl, nl = k[lw], N[lw], K[lw], n[lw]
    short[lw] = _ratio_series(kl, Nl - Kl - nl + kl, Kl - kl + 1.0, nl - kl + 1.0)
    short *= pmf
    other = np.maximum(1.0 - short - pmf, 0.0)
    return pmf, np.where(upper, short, other), np.where(upper, other, short)


def fisher_one_sided(a, b, c, d) -> tuple[np.ndarray, np.ndarray]:
    """One-sided (excess) Fisher exact p-value and mid-p.

    With X ~ hypergeometric(N, n_drug = a+b, n_event = a+c): p = P(X ≥ a), mid-p = P(X > a) + ½P(X = a).
    Each distinct (a, n_drug, n_event, N) is evaluated once, vectorised (no per-row ``fisher_exact``): the point
    probability by Loader's saddle-point method (as R ``dhyper``) and the tail by the exact term recurrence, summed
    on the side
    where it is small (1 − sum on the other side), which agrees with ``hypergeom.sf`` to ~1e-12 relative.

    Returns
    -------
    p, midp : ndarray of float64

    References
    ----------
    Fisher RA. The logic of inductive inference. J R Stat Soc 1935;98:39-82.
    Lancaster HO. Significance tests in discrete distributions. J Am Stat Assoc 1961;56:223-234 (mid-p).
    """
    a, b, c, d = as_cells(a, b, c, d)
    n_drug, n_event, n_total = a + b, a + c, a + b + c + d
    (ua, ud, ue, un), inv = _unique_rows(a, n_drug, n_event, n_total)
    pmf, above, below = _hypergeom_tails(ua, un, ud, ue)
    upper = ua * un.astype(np.float64) > ud.astype(np.float64) * ue
    # on the upper side P(X >= a) = above + pmf (all small terms); below the mean 1 - P(X < a) is accurate
    p = np.where(upper, above + pmf, 1.0 - below)
    midp = np.where(upper, above + 0.5 * pmf, 1.0 - below - 0.5 * pmf)
    p = np.where(ua == 0, 1.0, p)
    return p[inv], midp[inv]


def bh_qvalues(p) -> np.ndarray:
    """Benjamini–Hochberg q-values over all rows (one family); NaN p-values stay NaN and are not counted in m.

    See :func:`bh_qvalues_by` (this is its one-family case) for the method and reference.
    """
    p = np.asarray(p, dtype=np.float64)
    return bh_qvalues_by(p, np.zeros(p.shape, dtype=np.int8), np.ones(p.shape, dtype=bool))


def bh_qvalues_by(p, family, tested) -> np.ndarray:
    """Benjamini–Hochberg q-values computed separately within each ``family`` key over the ``tested`` rows.

    Rows not tested (e.g. a = 0, whose p = 1 only dilutes the family) get NaN. Vectorised: one sort by
    (family, p), ranks and sizes per family, and a running minimum from each family's largest p downwards.

    References
    ----------
    Benjamini Y, Hochberg Y. Controlling the false discovery rate: a practical and powerful approach to multiple
    testing. J R Stat Soc B 1995;57:289-300.
    """
    import pandas as pd

    p = np.asarray(p, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.asarray(tested, dtype=bool) & ~np.isnan(p))
    if idx.size == 0:
        return q
    fam, _ = pd.factorize(family[idx] if isinstance(family, np.ndarray) else pd.Series(family).iloc[idx])
    order = np.lexsort((p[idx], fam))
    f, ps = fam[order], p[idx][order]
    start = np.r_[0, np.flatnonzero(np.diff(f)) + 1]
    size = np.diff(np.r_[start, f.size])
    first = np.repeat(start, size)
    rank = np.arange(f.size) - first + 1
    m = np.repeat(size, size)
    ranked = ps * m / rank
    # running minimum from the end of each family: reverse, accumulate per family, reverse back
    rev = ranked[::-1]
    frev = f[::-1]
    out_rev = pd.Series(rev).groupby(frev, sort=False).cummin().to_numpy()
    q[idx[order]] = np.minimum(out_rev[::-1], 1.0)
    return q


def ic_noren(a, e, confidence_level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shrinkage information component (Norén 2013) with exact gamma credibility limits, log2 scale.

    IC = log2((a + 0.5)/(E + 0.5)); limits = log2(Gamma⁻¹(q; shape a + 0.5, rate E + 0.5)),
    q = (1 ∓ level)/2. Defined for every a ≥ 0, E ≥ 0.

    Parameters
    ----------
    a : array_like of int
        Observed count.
    e : array_like of float
        Expected count.
    confidence_level : float
        Two-sided level (0.95 gives IC025/IC975).

    Returns
    -------
    ic, lo, hi : ndarray of float64

    References
    ----------
    Norén GN, Hopstadius J, Bate A. Shrinkage observed-to-expected ratios for robust and transparent large-scale
    pattern discovery. Stat Methods Med Res 2013;22:57-69. doi:10.1177/0962280211403604
    """
    if not 0.0 < confidence_level < 1.0:
        raise ValueError(f"confidence_level must be in (0, 1), got {confidence_level}")
    shape, rate = np.broadcast_arrays(np.atleast_1d(np.asarray(a, dtype=np.float64)) + 0.5,
                                      np.atleast_1d(np.asarray(e, dtype=np.float64)) + 0.5)
    tail = (1.0 - confidence_level) / 2.0
    ic = np.log2(shape / rate)
    # the quantile of Gamma(shape, rate) is gammaincinv(shape, q)/rate: invert once per distinct count
    us, inv = unique_sorted(shape, return_inverse=True)
    lo = np.log2(special.gammaincinv(us, tail)[inv].reshape(shape.shape) / rate)
    hi = np.log2(special.gammaincinv(us, 1.0 - tail)[inv].reshape(shape.shape) / rate)
    return ic, lo, hi
