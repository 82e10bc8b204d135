"""Fellegi–Sunter parameters by expectation-maximisation on comparison patterns.

Pairs are aggregated to distinct comparison vectors (patterns) with counts before EM, so an iteration costs the
number of patterns (a few thousand), not the number of pairs.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-6
M_FLOOR = 1e-4


def level_shares(patterns: np.ndarray, counts: np.ndarray, n_levels: list[int], pseudo: float = 0.5) -> list:
    """Share of each level per comparison among the pairs that have both values (+``pseudo`` per level)."""
    G = np.asarray(patterns, dtype=np.int64).reshape(-1, len(n_levels))
    c = np.asarray(counts, dtype=np.float64)
    out = []
    for k, n in enumerate(n_levels):
        x = np.array([c[G[:, k] == lvl].sum() for lvl in range(n)]) + pseudo
        out.append(x / x.sum())
    return out


def _onehot(G: np.ndarray, n_levels: list[int]) -> list[np.ndarray]:
    return [np.stack([(G[:, k] == lvl) for lvl in range(n)], axis=1).astype(np.float64)
            for k, n in enumerate(n_levels)]


def _posterior(onehot, lam, m, u, active) -> np.ndarray:
    lm = np.full(onehot[0].shape[0], np.log(lam))
    lu = np.full(onehot[0].shape[0], np.log1p(-lam))
    for k, on in enumerate(active):
        if on:
            lm += onehot[k] @ np.log(m[k])
            lu += onehot[k] @ np.log(u[k])
    return 1.0 / (1.0 + np.exp(np.clip(lu - lm, -700, 700)))


def _floor(p: np.ndarray) -> np.ndarray:
    # no level is impossible among matches: a typing error can break any field (caps a weight at about -13 bits)
    p = np.maximum(p, M_FLOOR)
    return p / p.sum()


def estimate_m(patterns: np.ndarray, counts: np.ndarray, n_levels: list[int], u: list, active: list[bool],
               m_init: list, lam_init: float = 0.05, max_iter: int = 60, tol: float = 1e-6,
               fit_u: bool = False) -> dict:
    """EM for the match share and the ``m`` probabilities of a two-class mixture (``u`` fixed unless ``fit_u``).

    Parameters
    ----------
    patterns : (P, K) int array
        Agreement level of each comparison, -1 where a report lacks the field: left out of every sum (the
        comparison's likelihood factor is 1 in both classes, so a missing value weighs nothing).
    counts : (P,) array
        Number of pairs showing each pattern (EM runs on patterns, not pairs: an iteration costs P).
    n_levels : list of int
        Number of levels of each comparison.
    u : list of arrays
        Level probabilities among non-matches (from random pairs, which are almost all non-matches).
    active : list of bool
        Comparisons estimated here; the others are ignored (the training pairs were blocked on them, so their
        agreement says nothing about match status within these pairs).
    m_init, lam_init, max_iter, tol
        Start values; stop after ``max_iter`` iterations or when no parameter moves more than ``tol``.
    fit_u : bool
        Also estimate ``u`` among these pairs (starting from ``u``), as Winkler's EM does. Training pairs share
        their blocking fields, and unrelated reports that share a drug and its events also tend to share a
        country, a sender or a year: with ``u`` held at its value among random pairs, that agreement is credited
        to the match class, which then swallows the non-matches and ``m`` drifts towards ``u`` (at millions of
        reports no pair could be linked any more). The fitted ``u`` is used only here; weights use the random-pair
        ``u``.

    Returns
    -------
    dict
        ``lambda`` (match share among these pairs), ``m`` (list per comparison; inactive ones = ``m_init``),
        ``u`` (as fitted, or as given), ``iterations``, ``converged``.

    References
    ----------
    Fellegi IP, Sunter AB. A theory for record linkage. J Am Stat Assoc 1969;64:1183-1210.
    Winkler WE. Using the EM algorithm for weight computation in the Fellegi-Sunter model of record linkage.
    Proc Section Survey Res Methods, Am Stat Assoc 1988:667-671.
    """
    G = np.asarray(patterns, dtype=np.int64).reshape(-1, len(n_levels))
    c = np.asarray(counts, dtype=np.float64)
    oh = _onehot(G, n_levels)
    m = [np.asarray(x, np.float64) / np.sum(x) for x in m_init]
    u = [np.asarray(x, np.float64) / np.sum(x) for x in u]
    lam = float(lam_init)
    it, converged = 0, False
    for it in range(1, max_iter + 1):
        wm = c * _posterior(oh, lam, m, u, active)
        new_lam = float(np.clip(wm.sum() / c.sum(), 1e-9, 1 - 1e-9))
        new_m = [((oh[k] * wm[:, None]).sum(0) + _EPS) if active[k] else m[k] for k in range(len(n_levels))]
        new_m = [_floor(x / x.sum()) for x in new_m]
        if fit_u:
            wu = c - wm
            new_u = [(oh[k] * wu[:, None]).sum(0) + _EPS if active[k] else u[k] for k in range(len(n_levels))]
            u = [_floor(x / x.sum()) for x in new_u]
        delta = max([abs(new_lam - lam)] + [float(np.abs(a - b).max()) for a, b in zip(new_m, m)])
        lam, m = new_lam, new_m
        if delta < tol:
            converged = True
            break
    return {"lambda": lam, "m": m, "u": u, "iterations": it, "converged": converged}


def estimate_lambda(patterns: np.ndarray, counts: np.ndarray, n_levels: list[int], m: list, u: list,
                    total_pairs: float, max_iter: int = 200, tol: float = 1e-12) -> float:
    """EM for the prior match probability of two random reports (``m``, ``u`` fixed).

    ``u`` comes from random pairs, so the Bayes factors are against all non-matching pairs and the prior must be
    the share of matches among **all** ``total_pairs`` pairs: the fixed point of
    ``lambda = sum over candidate pairs of P(match | pattern, lambda) / total_pairs`` (pairs no blocking key
    proposes count as non-matches).
    """
    G = np.asarray(patterns, dtype=np.int64).reshape(-1, len(n_levels))
    c = np.asarray(counts, dtype=np.float64)
    oh = _onehot(G, n_levels)
    lam = float(c.sum()) / max(total_pairs, 1.0) * 0.01
    active = [True] * len(n_levels)
    for _ in range(max_iter):
        new = float(np.clip((c * _posterior(oh, lam, m, u, active)).sum() / max(total_pairs, 1.0), 1e-15, 0.5))
        if abs(np.log(new) - np.log(lam)) < tol:
            return new
        lam = new
    return lam


def match_weights(m: list, u: list) -> list[list[float]]:
    """log2(m/u) per comparison and level (the Fellegi–Sunter agreement/disagreement weights)."""
    return [np.log2(np.asarray(a) / np.asarray(b)).tolist() for a, b in zip(m, u)]
