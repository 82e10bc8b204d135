"""Benchmark of the statistics engine against vigipy 3.5.1 on a 1 M non-zero-pair table.

``python -m bench stats`` (``make bench``). Options (after the name): ``--reports N`` (default 780,000 reports,
which gives about 1.03 M non-zero drug × event pairs), ``--no-vigipy``, ``--mgps-likelihood L``, ``--vigipy-gps-maxiter K`` (default: vigipy's
own default; the call is timed once).

Phases timed for ours: report-level input → ``count_pairs`` → every frequentist column → MGPS fit (openebgm,
≥ 4 starts) → posterior EBGM/EB05/EB95 (all inside ``disproportionality``, whose parts are timed separately).
vigipy gets the same pair counts (its ``convert`` builds the dense drug × event matrix) and runs ``prr``, ``ror``,
``bcpnn``, ``gps`` with its defaults. The returned dict has every time, the ratio and peak RSS (from the harness).
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import pyarrow as pa


def make_reports(n_reports: int, n_drugs: int = 5000, n_events: int = 2000, seed: int = 7):
    """Synthetic report-level exposures (report_id, drug) and events (report_id, event).

    Zipf-like drug and event popularity; 1–4 drugs and 1–5 events per report (drugs may repeat inside a report:
    counted once); a share of each report's events comes from a small drug-specific set (that gives the
    over-dispersion MGPS models).
    """
    rng = np.random.default_rng(seed)
    p_drug = 1.0 / (np.arange(n_drugs) + 20.0) ** 1.1
    p_drug /= p_drug.sum()
    p_event = 1.0 / (np.arange(n_events) + 10.0)
    p_event /= p_event.sum()
    k_drug = 1 + np.minimum(rng.poisson(0.6, n_reports), 3)
    k_event = 1 + np.minimum(rng.poisson(1.0, n_reports), 4)
    rd = np.repeat(np.arange(n_reports, dtype=np.int64), k_drug)
    drugs = rng.choice(n_drugs, rd.size, p=p_drug)
    primary = drugs[np.r_[0, np.cumsum(k_drug)[:-1]]]
    re = np.repeat(np.arange(n_reports, dtype=np.int64), k_event)
    prim = np.repeat(primary, k_event)
    specific = rng.integers(0, n_events, (n_drugs, 15))
    strength = rng.gamma(0.7, 0.3, n_drugs).clip(max=0.9)  # drug-specific share of "own" events
    own = rng.random(re.size) < strength[prim]
    events = np.where(own, specific[prim, rng.integers(0, 15, re.size)], rng.choice(n_events, re.size, p=p_event))
    names_d = np.char.add("DRUG_", np.arange(n_drugs).astype(str))
    names_e = np.char.add("PT_", np.arange(n_events).astype(str))
    exposures = pa.table({"report_id": rd, "drug": pa.array(names_d[drugs])})
    evts = pa.table({"report_id": re, "event": pa.array(names_e[events])})
    return exposures, evts


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(exposures, events, likelihood: str = "openebgm") -> tuple[dict, object]:
    from pipeline.stats import count_pairs, fit_mgps
    from pipeline.stats import frequentist as fq
    from pipeline.stats.engine import disproportionality
    from pipeline.stats.mgps import posterior

    t = {}
    t0 = time.perf_counter()
    counts = count_pairs(exposures, events)
    t["count_s"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    fit = fit_mgps(counts, likelihood=likelihood)
    t["mgps_fit_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    rows, _ = disproportionality(counts, mgps_fit=fit)
    t["all_columns_given_fit_s"] = time.perf_counter() - t2
    t["ours_total_s"] = time.perf_counter() - t0
    # component timings (outside the total) for the report
    a = counts.column("a").to_numpy()
    nd, ne, n = (counts.column(c).to_numpy() for c in ("n_drug", "n_event", "n_total"))
    b, c, d = nd - a, ne - a, n - nd - ne + a
    t3 = time.perf_counter()
    fq.prr(a, b, c, d), fq.ror(a, b, c, d), fq.chi2_pearson(a, b, c, d), fq.chi2_yates(a, b, c, d)
    fq.ic_noren(a, fq.expected(a, b, c, d))
    t["freq_no_fisher_s"] = time.perf_counter() - t3
    t4 = time.perf_counter()
    fq.fisher_one_sided(a, b, c, d)
    t["fisher_s"] = time.perf_counter() - t4
    t5 = time.perf_counter()
    posterior(fit.theta, a, nd * ne / n)
    t["posterior_s"] = time.perf_counter() - t5
    info = {"mgps_likelihood": likelihood, "pairs": counts.num_rows, "n_total": int(n[0]), "mgps_points": fit.n_points,
            "mgps_converged": fit.converged, "mgps_theta": [round(x, 6) for x in fit.theta],
            "mgps_warnings": fit.warnings, "signals_ebgm": int(rows["signal_ebgm"].sum()),
            "rss_after_ours_mb": round(_rss_mb(), 1)}
    return {**{k: round(v, 3) for k, v in t.items()}, **info}, counts


def run_vigipy(counts, gps_maxiter: int | None) -> dict:
    import pandas as pd
    import vigipy

    df = pd.DataFrame({"name": counts.column("drug").to_numpy(zero_copy_only=False),
                       "AE": counts.column("event").to_numpy(zero_copy_only=False),
                       "count": counts.column("a").to_numpy()})
    t = {}
    t0 = time.perf_counter()
    container = vigipy.convert(df)
    t["vigipy_convert_s"] = time.perf_counter() - t0
    for name in ("prr", "ror", "bcpnn"):
        t1 = time.perf_counter()
        getattr(vigipy, name)(container)
        t[f"vigipy_{name}_s"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    kw = {} if gps_maxiter is None else {"minimization_options": {"maxiter": gps_maxiter}}
    try:
        res = vigipy.gps(container, **kw)
        conv = getattr(res, "params", {}).get("convergence") if hasattr(res, "params") else None
        t["vigipy_gps_note"] = str(conv)[:200] if conv is not None else "ok"
    except Exception as exc:  # report, don't hide
        t["vigipy_gps_note"] = f"error: {type(exc).__name__}: {exc}"[:200]
    t["vigipy_gps_s"] = time.perf_counter() - t1
    t["vigipy_total_s"] = sum(v for k, v in t.items() if k.endswith("_s"))
    t["rss_after_vigipy_mb"] = _rss_mb()
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in t.items()}


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="bench stats")
    ap.add_argument("--reports", type=int, default=780_000)
    ap.add_argument("--no-vigipy", action="store_true")
    ap.add_argument("--vigipy-gps-maxiter", type=int, default=None)
    ap.add_argument("--mgps-likelihood", default="openebgm", choices=("openebgm", "conditional", "zero-inclusive"))
    args, _ = ap.parse_known_args(argv)

    t0 = time.perf_counter()
    exposures, events = make_reports(args.reports)
    gen_s = time.perf_counter() - t0
    print(f"input: {exposures.num_rows:,} exposure rows, {events.num_rows:,} event rows, {args.reports:,} reports "
          f"(generated in {gen_s:.1f} s)", flush=True)
    ours, counts = run_ours(exposures, events, args.mgps_likelihood)
    del exposures, events
    print(f"ours: {ours['pairs']:,} non-zero pairs; count {ours['count_s']} s, MGPS fit {ours['mgps_fit_s']} s "
          f"({ours['mgps_points']:,} points, converged={ours['mgps_converged']}), "
          f"all columns {ours['all_columns_given_fit_s']} s"
          f" -> total {ours['ours_total_s']} s (frequentist w/o Fisher {ours['freq_no_fisher_s']} s, Fisher "
          f"{ours['fisher_s']} s, posterior {ours['posterior_s']} s)", flush=True)
    result = {"generate_s": round(gen_s, 2), **ours}
    if not args.no_vigipy:
        try:
            vig = run_vigipy(counts, args.vigipy_gps_maxiter)
        except ImportError:
            vig = {"vigipy_error": "vigipy not installed (pip install -r bench/requirements.txt)"}
        result.update(vig)
        if "vigipy_total_s" in vig:
            result["speed_ratio_vigipy_over_ours"] = round(vig["vigipy_total_s"] / ours["ours_total_s"], 2)
            print(f"vigipy 3.5.1: convert {vig['vigipy_convert_s']} s, prr {vig['vigipy_prr_s']} s, ror "
                  f"{vig['vigipy_ror_s']} s, bcpnn {vig['vigipy_bcpnn_s']} s, gps {vig['vigipy_gps_s']} s "
                  f"({vig['vigipy_gps_note']}) -> total {vig['vigipy_total_s']} s", flush=True)
            print(f"speed ratio vigipy/ours: {result['speed_ratio_vigipy_over_ours']}x", flush=True)
    return result
