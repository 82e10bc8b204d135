"""Benchmark of the duplicate detection: pairwise precision/recall (rules alone vs rules + linkage) and scale.

``python -m bench.bench_linkage [--seeds 3,21,8] [--quarters 2019Q1:2020Q2] [--reports 4000]``: for each seed a
synthetic mirror with realistic duplicate variants (``write_mirror(duplicate_variants=True)``: fields missing,
dates off by days, PTs added or dropped, other product names) goes through fetch -> ingest -> curate twice
(linkage off, then on); the generator's ``truth.json`` lists every group of one patient
(``cases.patient_groups``). A pair is two reports of one group; precision = true pairs found / pairs found, recall
= true pairs found / true pairs, both over reports with a drug and a PT.

``python -m bench.bench_linkage --size 1000000``: scale. Raw tables of that many DEMO rows are written directly
(``bench.bench_curate``'s generator, in a subprocess), curated with linkage on; prints the duplicate step's seconds,
the linkage stages and the whole process's peak RSS.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path


def pairs_of(groups) -> set[tuple[int, int]]:
    """All unordered pairs inside each group (brute force)."""
    out = set()
    for g in groups:
        out.update(itertools.combinations(sorted(g), 2))
    return out


def pairwise(found_groups, true_groups) -> dict:
    found, true = pairs_of(found_groups), pairs_of(true_groups)
    tp = len(found & true)
    return {"true_pairs": len(true), "found_pairs": len(found), "tp": tp,
            "precision": round(tp / len(found), 4) if found else None,
            "recall": round(tp / len(true), 4) if true else None}


def config_variant(folder: Path, replace: dict[str, str]):
    from pipeline.settings import DEFAULT_CONFIG_PATH, load_config

    text = DEFAULT_CONFIG_PATH.read_text()
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    p = folder / f"config-{abs(hash(tuple(replace.items()))) % 10**8}.toml"
    p.write_text(text)
    return load_config(p)


def curated_groups(dd) -> list[list[int]]:
    import pyarrow.parquet as pq

    t = pq.read_table(dd.curated / "reports.parquet",
                      columns=["report_id", "dup_group_id", "has_drug", "has_pt"]).to_pylist()
    groups: dict[int, list[int]] = {}
    for r in t:
        if r["dup_group_id"] is not None and r["has_drug"] and r["has_pt"]:
            groups.setdefault(r["dup_group_id"], []).append(r["report_id"])
    return [g for g in groups.values() if len(g) > 1]


def evaluate(seed: int, quarters: str, reports: int, root: Path) -> dict:
    from pipeline.curate import curate
    from pipeline.ingest import ingest
    from pipeline.layout import DataDir
    from pipeline.quarters import parse_range
    from pipeline.settings import load_config
    from pipeline.sources import fetch
    from pipeline.synthetic import write_mirror

    root.mkdir(parents=True, exist_ok=True)
    mirror = root / "mirror"
    write_mirror(mirror, parse_range(quarters), reports_per_quarter=reports, seed=seed, progress=False,
                 duplicate_variants=True)
    truth = json.loads((mirror / "truth.json").read_text())["cases"]["patient_groups"]
    dd = DataDir.of(root / "data")
    fetch(str(mirror), dd, progress=False)
    ingest(dd, progress=False, validate=False)
    out = {"seed": seed, "quarters": quarters, "reports_per_quarter": reports, "true_groups": len(truth)}
    rules_only = config_variant(root, {"\nenabled = true\n": "\nenabled = false\n"})
    curate(dd, rules_only, progress=False, force=True)
    out["rules"] = pairwise(curated_groups(dd), truth)
    t0 = time.perf_counter()
    s = curate(dd, load_config(), progress=False, force=True)
    out["curate_with_linkage_s"] = round(time.perf_counter() - t0, 2)
    out["linkage"] = pairwise(curated_groups(dd), truth)
    lk = s["duplicates"]["linkage"]
    out["linkage_pairs_scored"] = lk.get("pairs")
    out["linkage_seconds"] = lk.get("seconds")
    return out


def scale(size: int, root: Path) -> dict:
    import multiprocessing as mp
    import os
    import resource

    from bench.bench_curate import _gen
    from pipeline.curate import curate
    from pipeline.layout import DataDir
    from pipeline.settings import load_config

    n_q = max(1, round(size / 450_000))
    per_q = size // n_q
    dd = DataDir.of(root)
    stamp = dd.root / "bench_params.json"
    params = {"quarters": n_q, "reports": per_q, "seed": 3}
    if not stamp.exists() or json.loads(stamp.read_text()) != params:
        import shutil

        shutil.rmtree(dd.root, ignore_errors=True)
        p = mp.get_context("spawn").Process(target=_gen, args=(str(dd.root), n_q, per_q, 3))
        p.start()
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"generator failed with exit code {p.exitcode}")
        stamp.write_text(json.dumps(params))
    t0 = time.perf_counter()
    s = curate(dd, load_config(), progress=False, force=True)
    seconds = time.perf_counter() - t0
    lk = s["duplicates"].get("linkage", {})
    return {"demo_rows": n_q * per_q, "kept_cases": s["kept_cases"], "curate_s": round(seconds, 1),
            "duplicates_step_s": s["timings_s"].get("duplicates"), "linkage_stage_s": lk.get("seconds"),
            "linkable_reports": lk.get("reports"), "candidate_pairs": lk.get("pairs"),
            "pairs_by_block": lk.get("pairs_by_block"), "linked_pairs": lk.get("linked_pairs"),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024, 2),
            "load_avg_1min": round(os.getloadavg()[0], 2)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="bench_linkage")
    ap.add_argument("--seeds", default="3,21,8")
    ap.add_argument("--quarters", default="2019Q1:2020Q2")
    ap.add_argument("--reports", type=int, default=4000, help="reports per quarter (evaluation)")
    ap.add_argument("--size", type=int, default=0, help="DEMO rows for the scale run (0 = evaluation only)")
    ap.add_argument("--dir", default="/tmp/bench_linkage")
    args, _ = ap.parse_known_args(argv or [])
    root = Path(args.dir)
    if args.size:
        res = scale(args.size, root / f"scale_{args.size}")
        print(f"linkage scale: {res['demo_rows']:,} DEMO rows, {res['kept_cases']:,} cases: duplicates step "
              f"{res['duplicates_step_s']} s (curate {res['curate_s']} s), peak RSS {res['peak_rss_gb']} GB", flush=True)
        return res
    results = []
    for seed in (int(x) for x in args.seeds.split(",")):
        r = evaluate(seed, args.quarters, args.reports, root / f"seed{seed}")
        results.append(r)
        print(f"seed {seed}: {r['true_groups']} true groups, {r['rules']['true_pairs']} true pairs | rules "
              f"P/R {r['rules']['precision']}/{r['rules']['recall']} | linkage P/R {r['linkage']['precision']}/"
              f"{r['linkage']['recall']}", flush=True)
    return {"evaluation": results}


if __name__ == "__main__":
    import sys

    print(json.dumps(main(sys.argv[1:]), indent=2, default=str))
