"""Benchmark of the statistics engine against vigipy 3.5.1.

``python -m bench stats`` (``make bench``) runs two cases:

* ``quiet`` (default, ``--case quiet``): a quiet background of about 1 M non-zero drug × event pairs where events
  are drawn independently of drugs (RR = 1) except a few hundred injected true signals. The whole
  ``pipeline disproportionality`` process (imports, reading, report-level counting, every statistic, MGPS,
  writing) and a vigipy 3.5.1 process (PRR + ROR + BCPNN + GPS on the pair counts of the same table) run side by
  side as child processes: wall time, CPU time (user + system, from ``wait4``) and peak RSS of each; plus the
  checks that EBGM/EB05 are finite for every pair and how many injected signals EB05 ≥ 2 finds.
* ``caers``: −log L of the MGPS fit on openEBGM's ``caers`` data against openEBGM's optimum 4162.455710379538.

``--case overdispersed`` runs the older in-process phase timing on an over-dispersed 1 M-pair table.
Options: ``--reports N``, ``--no-vigipy``, ``--mgps-likelihood L``, ``--vigipy-gps-maxiter K``.

Phases timed for ours: report-level input → ``count_pairs`` → every frequentist column → MGPS fit (openebgm,
≥ 4 starts) → posterior EBGM/EB05/EB95 (all inside ``disproportionality``, whose parts are timed separately).
vigipy gets the same pair counts (its ``convert`` builds the dense drug × event matrix) and runs ``prr``, ``ror``,
``bcpnn``, ``gps`` with its defaults. The returned dict has every time, the ratio and peak RSS (from the harness).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa


def _zipf_reports(rng, n_reports: int, n_drugs: int, n_events: int):
    """Zipf-like drug and event popularity, 1–4 drugs and 1–5 events per report.

    Returns the drug rows (report ids ``rd``, drug indices ``drugs``), drugs per report ``k_drug``, the event rows'
    report ids ``re`` (events still to draw), events per report ``k_event`` and the event popularity ``p_event``.
    """
    p_drug = 1.0 / (np.arange(n_drugs) + 20.0) ** 1.1
    p_drug /= p_drug.sum()
    p_event = 1.0 / (np.arange(n_events) + 10.0)
    p_event /= p_event.sum()
    k_drug = 1 + np.minimum(rng.poisson(0.6, n_reports), 3)
    k_event = 1 + np.minimum(rng.poisson(1.0, n_reports), 4)
    rd = np.repeat(np.arange(n_reports, dtype=np.int64), k_drug)
    drugs = rng.choice(n_drugs, rd.size, p=p_drug)
    re = np.repeat(np.arange(n_reports, dtype=np.int64), k_event)
    return rd, drugs, k_drug, re, k_event, p_event


def make_reports(n_reports: int, n_drugs: int = 5000, n_events: int = 2000, seed: int = 7):
    """Synthetic report-level exposures (report_id, drug) and events (report_id, event).

    Zipf-like drug and event popularity; 1–4 drugs and 1–5 events per report (drugs may repeat inside a report:
    counted once); a share of each report's events comes from a small drug-specific set (that gives the
    over-dispersion MGPS models).
    """
    rng = np.random.default_rng(seed)
    rd, drugs, k_drug, re, k_event, p_event = _zipf_reports(rng, n_reports, n_drugs, n_events)
    primary = drugs[np.r_[0, np.cumsum(k_drug)[:-1]]]
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


OPENEBGM_CAERS_NEG_LOGLIK = 4162.455710379538  # openEBGM autoHyper on caers (statistics reference)
ROOT = Path(__file__).resolve().parents[1]


def make_quiet_reports(n_reports: int, n_drugs: int = 6000, n_events: int = 2500, n_signals: int = 300,
                       seed: int = 11):
    """Report-level rows (report_id, drug, event) of a quiet background with ``n_signals`` injected signals.

    Drugs and events are drawn independently (Zipf-like popularity; 1–4 drugs and 1–5 events per report), so
    every pair has RR = 1, except ``n_signals`` (drug, event) pairs: a report naming one of those drugs also gets
    its signal event with probability 0.3. Rows pair every drug of a report with every event of the report.
    Returns the rows table and the list of injected pairs.
    """
    rng = np.random.default_rng(seed)
    rd, drugs, _, re, _, p_event = _zipf_reports(rng, n_reports, n_drugs, n_events)
    events = rng.choice(n_events, re.size, p=p_event)
    # signals on drugs of middling popularity (rank 50..2000), each with one event
    sig_drugs = rng.choice(np.arange(50, 2000), n_signals, replace=False)
    sig_event = np.full(n_drugs, -1)
    sig_event[sig_drugs] = rng.integers(0, n_events, n_signals)
    hit = (sig_event[drugs] >= 0) & (rng.random(rd.size) < 0.3)
    re = np.concatenate([re, rd[hit]])
    events = np.concatenate([events, sig_event[drugs[hit]]])
    # every drug of a report x every event of the report (rows sorted by report for the join)
    d_df = np.unique(np.stack([rd, drugs], 1), axis=0)
    e_df = np.unique(np.stack([re, events], 1), axis=0)
    d_start = np.searchsorted(d_df[:, 0], np.arange(n_reports + 1))
    e_start = np.searchsorted(e_df[:, 0], np.arange(n_reports + 1))
    nd, ne = np.diff(d_start), np.diff(e_start)
    per = nd * ne
    rep = np.repeat(np.arange(n_reports), per)
    off = np.arange(per.sum()) - np.repeat(np.cumsum(per) - per, per)
    di = d_start[rep] + off // ne[rep]
    ei = e_start[rep] + off % ne[rep]
    names_d = np.char.add("DRUG_", np.arange(n_drugs).astype(str))
    names_e = np.char.add("PT_", np.arange(n_events).astype(str))
    rows = pa.table({"report_id": rep.astype(np.int64), "drug": pa.array(names_d[d_df[di, 1]]),
                     "event": pa.array(names_e[e_df[ei, 1]])})
    injected = [(str(names_d[d]), str(names_e[sig_event[d]])) for d in sig_drugs]
    return rows, injected


def _run_measured(cmd: list[str], env=None) -> dict:
    """Run a child process: wall time, CPU time (user + system) and peak RSS of that child alone (``wait4``)."""
    with tempfile.TemporaryFile() as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.seek(0)
        out = log.read().decode(errors="replace")
    return {"wall_s": round(wall, 2), "cpu_s": round(ru.ru_utime + ru.ru_stime, 2),
            "peak_rss_mb": round(ru.ru_maxrss / 1024, 1), "exit": os.waitstatus_to_exitcode(status), "output": out}


VIGIPY_SCRIPT = r"""
import json, sys, time
t = {}
t0 = time.perf_counter()
import pandas as pd
import vigipy
t["import_s"] = time.perf_counter() - t0
df = pd.read_parquet(sys.argv[1]).rename(columns={"drug": "name", "event": "AE", "a": "count"})[["name", "AE", "count"]]
t1 = time.perf_counter(); c = vigipy.convert(df); t["convert_s"] = time.perf_counter() - t1
for name in ("prr", "ror", "bcpnn"):
    t1 = time.perf_counter(); getattr(vigipy, name)(c); t[name + "_s"] = time.perf_counter() - t1
t1 = time.perf_counter()
kw = {} if sys.argv[2] == "default" else {"minimization_options": {"maxiter": int(sys.argv[2])}}
try:
    res = vigipy.gps(c, **kw); t["gps_note"] = str(getattr(res, "params", {}).get("convergence", "ok"))[:120]
except Exception as exc:
    t["gps_note"] = f"error: {type(exc).__name__}: {exc}"[:200]
t["gps_s"] = time.perf_counter() - t1
print("VIGIPY " + json.dumps(t))
"""


def quiet_case(n_reports: int, no_vigipy: bool, gps_maxiter: int | None) -> dict:
    import pandas as pd
    import pyarrow.parquet as pq

    from pipeline.stats import count_rows

    t0 = time.perf_counter()
    rows, injected = make_quiet_reports(n_reports)
    work = Path(tempfile.mkdtemp(prefix="bench-stats-"))
    src = work / "quiet_reports.parquet"
    pq.write_table(rows, src)
    counts = count_rows(rows)  # the same table as pair counts, for vigipy (which cannot count reports)
    pq.write_table(counts, work / "quiet_counts.parquet")
    n_pairs = counts.num_rows
    del rows, counts
    print(f"quiet background: {n_reports:,} reports, {n_pairs:,} non-zero pairs, {len(injected)} injected signals "
          f"(generated in {time.perf_counter() - t0:.1f} s)", flush=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = work / "quiet_out.parquet"
    ours = _run_measured([sys.executable, "-m", "pipeline", "--quiet", "disproportionality", "--input", str(src),
                          "--out", str(out)], env=env)
    if ours["exit"] != 0:
        return {"quiet_error": ours["output"][-500:]}
    res = pd.read_parquet(out, columns=["drug", "event", "a", "ebgm", "eb05", "eb95"])
    side = json.loads(Path(str(out) + ".json").read_text())
    key = set(injected)
    is_sig = np.array([(d, e) in key for d, e in zip(res["drug"], res["event"])])
    r = {"quiet_reports": n_reports, "quiet_pairs": n_pairs, "quiet_injected": len(injected),
         "ours_wall_s": ours["wall_s"], "ours_cpu_s": ours["cpu_s"], "ours_peak_rss_mb": ours["peak_rss_mb"],
         "ebgm_finite_all": bool(np.isfinite(res["ebgm"]).all()), "eb05_finite_all": bool(np.isfinite(res["eb05"]).all()),
         "eb05_ge2_injected": int((res["eb05"].to_numpy()[is_sig] >= 2).sum()),
         "eb05_ge2_background": int((res["eb05"].to_numpy()[~is_sig] >= 2).sum()),
         "mgps_boundary": side["mgps"]["boundary"], "mgps_agreement": side["mgps"]["agreement"],
         "mgps_points": side["mgps"]["n_points"], "mgps_seconds": side["mgps"]["seconds"],
         "ours_seconds_inside": side["seconds"]}
    print(f"ours (whole `pipeline disproportionality` process): wall {ours['wall_s']} s, CPU {ours['cpu_s']} s, "
          f"peak RSS {ours['peak_rss_mb']} MB; EBGM finite for all pairs: {r['ebgm_finite_all']}, EB05 finite: "
          f"{r['eb05_finite_all']}; EB05 >= 2 on {r['eb05_ge2_injected']}/{len(injected)} injected signals and "
          f"{r['eb05_ge2_background']} background pairs; MGPS boundary: {r['mgps_boundary'] or 'none'}",
          flush=True)
    if not no_vigipy:
        vig = _run_measured([sys.executable, "-c", VIGIPY_SCRIPT, str(work / "quiet_counts.parquet"),
                             str(gps_maxiter or "default")], env=env)
        line = [x for x in vig["output"].splitlines() if x.startswith("VIGIPY ")]
        if vig["exit"] != 0 or not line:
            r["vigipy_error"] = vig["output"][-300:] or f"exit {vig['exit']}"
            print(f"vigipy: {r['vigipy_error']}", flush=True)
        else:
            parts = json.loads(line[-1][len("VIGIPY "):])
            r.update({"vigipy_wall_s": vig["wall_s"], "vigipy_cpu_s": vig["cpu_s"],
                      "vigipy_peak_rss_mb": vig["peak_rss_mb"],
                      **{f"vigipy_{k}": (round(v, 2) if isinstance(v, float) else v) for k, v in parts.items()}})
            r["ratio_wall"] = round(vig["wall_s"] / ours["wall_s"], 2)
            r["ratio_cpu"] = round(vig["cpu_s"] / ours["cpu_s"], 2)
            print(f"vigipy 3.5.1 PRR+ROR+BCPNN+GPS process: wall {vig['wall_s']} s, CPU {vig['cpu_s']} s, peak RSS "
                  f"{vig['peak_rss_mb']} MB (gps {parts['gps_s']:.1f} s: {parts['gps_note']})", flush=True)
            print(f"speed ratio vigipy/ours: wall {r['ratio_wall']}x, CPU {r['ratio_cpu']}x (target >= 10x); "
                  f"ours peak RSS {ours['peak_rss_mb']} MB (target <= 1536 MB)", flush=True)
    for f in work.iterdir():
        f.unlink()
    work.rmdir()
    return r


def caers_case() -> dict:
    import pandas as pd

    from pipeline.stats import count_pairs, fit_mgps

    df = pd.read_csv(ROOT / "tests" / "fixtures" / "reference" / "openEBGM_caers.csv", keep_default_na=False,
                     dtype=str).rename(columns={"id": "report_id", "var1": "drug", "var2": "event"})
    fit = fit_mgps(count_pairs(df[["report_id", "drug"]], df[["report_id", "event"]]))
    ok = fit.neg_loglik <= OPENEBGM_CAERS_NEG_LOGLIK
    print(f"caers: -logL {fit.neg_loglik!r} (openEBGM {OPENEBGM_CAERS_NEG_LOGLIK!r}: "
          f"{'at or below' if ok else 'ABOVE'}), fit {fit.seconds:.2f} s", flush=True)
    return {"caers_neg_loglik": fit.neg_loglik, "caers_at_or_below_openebgm": ok}


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="bench stats")
    ap.add_argument("--case", choices=("quiet", "overdispersed"), default="quiet")
    ap.add_argument("--reports", type=int, default=None)
    ap.add_argument("--no-vigipy", action="store_true")
    ap.add_argument("--vigipy-gps-maxiter", type=int, default=None)
    ap.add_argument("--mgps-likelihood", default="openebgm", choices=("openebgm", "conditional", "zero-inclusive"))
    args, _ = ap.parse_known_args(argv)
    if args.case == "quiet":
        result = quiet_case(args.reports or 700_000, args.no_vigipy, args.vigipy_gps_maxiter)
        result.update(caers_case())
        return result
    return overdispersed_case(args)


def overdispersed_case(args) -> dict:
    args.reports = args.reports or 780_000
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
