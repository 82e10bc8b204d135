"""Probabilistic record linkage of reports (Fellegi–Sunter, as the WHO's vigiMatch), on DuckDB.

:func:`link` runs: records (:mod:`.features`) -> candidate pairs by blocking keys (:mod:`.blocking`) -> comparison
vectors (:mod:`.comparisons`) -> m/u by EM on the pattern counts (:mod:`.em`) -> match weight per pair = prior
log-odds + sum of log2(m/u) of its levels + term-frequency adjustments -> pairs at or above the threshold
probability. Groups are formed with the rule matches by :mod:`.cluster` (in :mod:`pipeline.curate.duplicates`).

Term-frequency adjustment (as splink's): on an exact agreement (same country, same day of event, identical suspect
set, identical PT set) ``u`` is replaced by the share of reports holding that very value, i.e. the weight moves by
``log2 u(level) - log2 tf(value)`` bits, clipped to +-``TF_CAP_BITS``: agreement on a rare value counts more, on a
common one less.

References: Fellegi & Sunter 1969 (J Am Stat Assoc 64:1183); Norén, Orre, Bate & Edwards 2007, Duplicate
detection in adverse drug reaction surveillance (Data Min Knowl Discov 14:305-328); Tregunno, Fink, Fernandez-
Fernandez, Lázaro-Bengoa & Norén 2014, Performance of probabilistic method to detect duplicate individual case
safety reports (Drug Saf 37:249-258).
"""

from __future__ import annotations

import math
import time

import numpy as np
import pyarrow as pa

from pipeline.curate.linkage import blocking, comparisons, em, features

TF_CAP_BITS = 6.0
_TABLES = ("lk_rec", "lk_pairs", "lk_cmp", "lk_rand", "lk_cmp_rand", "lk_rule", "lk_cmp_rule", "lk_train",
           "lk_cmp_train")


def threshold_weight(threshold: float) -> float:
    """Match weight (log2 odds) of a match probability."""
    return math.log2(threshold / (1 - threshold))


def _patterns(con, table: str = "lk_cmp") -> tuple[np.ndarray, np.ndarray]:
    cols = ", ".join(f"coalesce(g_{k}, -1)" for k in comparisons.LEVELS)
    rows = con.execute(f"SELECT {cols}, count(*) FROM {table} GROUP BY ALL ORDER BY ALL").fetchall()
    arr = np.array(rows, dtype=np.int64).reshape(-1, len(comparisons.LEVELS) + 1)
    return arr[:, :-1], arr[:, -1]


def link(con, policy, rule_edges: np.ndarray) -> tuple[np.ndarray, dict]:
    """Score candidate pairs; leave temp table ``lk_scored(a, b, w, p)`` (every candidate pair) and return the
    linked pairs (``p >= policy.threshold``) as an (n, 2) array with the summary (parameters included).

    ``rule_edges`` (pairs linked by the exact rules) start EM's match distribution. Below ``policy.min_reports``
    linkable reports nothing is scored (``lk_scored`` is empty) and the summary says so.
    """
    t0 = time.perf_counter()
    secs = {}

    def lap(name):
        nonlocal t0
        secs[name] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
    n = features.build_records(con)
    lap("records")
    empty = np.empty((0, 2), np.int64)
    if n < policy.min_reports:
        con.execute("CREATE OR REPLACE TEMP TABLE lk_scored (a BIGINT, b BIGINT, w DOUBLE, p DOUBLE)")
        _drop(con)
        return empty, {"skipped": f"{n:,} linkable reports < duplicates.linkage.min_reports {policy.min_reports:,}",
                       "reports": n}
    blocks = blocking.candidate_pairs(con, policy.max_block_size)
    lap("blocking")
    comparisons.compare(con)
    lap("comparisons")
    levels = [len(v) for v in comparisons.LEVELS.values()]
    names = list(comparisons.LEVELS)
    # u: level shares among random pairs (almost all non-matches)
    n_random = blocking.random_pairs(con, policy.u_sample_reports, "lk_rand")
    comparisons.compare(con, "lk_rand", "lk_cmp_rand")
    u = em.level_shares(*_patterns(con, table="lk_cmp_rand"), levels)
    # m start: the pairs the exact rules link (a prior the data may move away from)
    m0 = [np.asarray(comparisons.m_start(name)) for name in names]
    if len(rule_edges):
        lo, hi = np.minimum(rule_edges[:, 0], rule_edges[:, 1]), np.maximum(rule_edges[:, 0], rule_edges[:, 1])
        con.register("_lk_rule", pa.table({"a": lo, "b": hi}))
        con.execute("CREATE OR REPLACE TEMP TABLE lk_rule AS SELECT DISTINCT a, b FROM _lk_rule")
        con.unregister("_lk_rule")
        comparisons.compare(con, "lk_rule", "lk_cmp_rule")
        rule_G, rule_c = _patterns(con, table="lk_cmp_rule")
        if rule_c.sum() >= 10:
            m0 = [0.5 * a / a.sum() + 0.5 * b for a, b in zip(m0, em.level_shares(rule_G, rule_c, levels))]
    # m: EM on training blocks, each estimating the comparisons it does not block on; averaged over sessions
    sessions = {}
    for tname, (fields, blocked) in blocking.TRAINING.items():
        # training needs thousands of pairs, not all: whole blocks sampled by key hash, larger blocks allowed
        n_pairs = blocking.block_pairs(con, fields, 4 * policy.max_block_size, "lk_train",
                                       sample_mod=max(1, math.ceil(n / policy.em_sample_reports)))
        comparisons.compare(con, "lk_train", "lk_cmp_train")
        G, c = _patterns(con, table="lk_cmp_train")
        active = [k not in blocked for k in names]
        if n_pairs:
            sessions[tname] = {"pairs": int(n_pairs), "active": [k for k, a in zip(names, active) if a],
                               **em.estimate_m(G, c, levels, u, active, m0, max_iter=policy.em_max_iterations,
                                               fit_u=True)}
    m = []
    for k, name in enumerate(names):
        got = [s["m"][k] for s in sessions.values() if name in s["active"]]
        m.append(np.mean(got, axis=0) if got else m0[k] / np.sum(m0[k]))
    G, c = _patterns(con)
    lam = em.estimate_lambda(G, c, levels, m, u, n * (n - 1) / 2)
    weights = em.match_weights(m, u)
    params = {"lambda": lam, "m": [x.tolist() for x in m], "u": [x.tolist() for x in u]}
    lap("em")
    # literals as DOUBLE: DuckDB reads 1.25 as a DECIMAL, and a sum of DECIMAL cases over every pair costs more
    # than twice the same sum in DOUBLE
    terms = [f"{math.log2(params['lambda'] / (1 - params['lambda']))!r}::DOUBLE"]
    for k, name in enumerate(comparisons.LEVELS):
        cases = " ".join(f"WHEN {lvl} THEN {w!r}::DOUBLE" for lvl, w in enumerate(weights[k]))
        terms.append(f"CASE g_{name} {cases} ELSE 0::DOUBLE END")
    for name, (col, exact, known) in comparisons.TF.items():
        # the field's u of exact agreement (among pairs where it is known) replaced by the agreeing value's own
        # frequency: log2(m/tf) = log2(m/u) + this
        uk = u[names.index(name)]
        lu = math.log2(sum(uk[i] for i in exact) / sum(uk[i] for i in known))
        terms.append(f"CASE WHEN g_{name} IN ({', '.join(map(str, exact))}) AND {col} IS NOT NULL THEN "
                     f"greatest(-{TF_CAP_BITS}, least({TF_CAP_BITS}, {lu!r}::DOUBLE - {col})) ELSE 0::DOUBLE END")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE lk_scored AS
        SELECT a, b, w, 1 / (1 + pow(2, -greatest(-1000, least(1000, w)))) AS p
        FROM (SELECT a, b, {' + '.join(terms)} AS w FROM lk_cmp)""")
    tw = threshold_weight(policy.threshold)
    linked = con.execute(f"SELECT a, b FROM lk_scored WHERE w >= {tw!r} ORDER BY a, b").fetchnumpy()
    edges = np.column_stack([linked["a"].astype(np.int64), linked["b"].astype(np.int64)]) if len(linked["a"]) \
        else empty
    lap("scoring")
    _drop(con)
    summary = {
        "reports": n, **blocks, "linked_pairs": int(len(edges)), "threshold": policy.threshold,
        "threshold_weight": round(tw, 4),
        "parameters": {
            "lambda": params["lambda"], "random_pairs_for_u": int(n_random),
            "training": {k: {"pairs": v["pairs"], "estimates": v["active"], "lambda": v["lambda"],
                             "iterations": v["iterations"], "converged": v["converged"]}
                         for k, v in sessions.items()},
            "comparisons": {name: {"levels": list(lv), "m": params["m"][k], "u": params["u"][k],
                                   "weight_bits": weights[k]}
                            for k, (name, lv) in enumerate(comparisons.LEVELS.items())},
            "tf_cap_bits": TF_CAP_BITS,
            "patterns_scored": int(len(c)),
        },
        "seconds": secs,
    }
    return edges, summary


def _drop(con) -> None:
    for t in _TABLES:
        con.execute(f"DROP TABLE IF EXISTS {t}")
