"""The whole FAERS history on this machine: first load, nightly increment, no-op (``make bench BENCH_ARGS="history
--scale 0.02"``; not in CI).

A synthetic history (``pipeline.synthetic``: FDA's zip layout and file quirks, all three eras, follow-up versions,
re-ships and deleted-case lists across quarters) with FDA's real per-quarter volumes: DEMO rows = 6,500 per MB of
FDA's ASCII zip (sizes from FDA's download page as scraped on 2024-07-23, 2004Q1-2024Q1) and 420,000 per quarter
from 2024Q2 on, times ``--scale``. The history runs to 2026Q2; 2026Q3 is the nightly increment.

Every step is the real command, run as its own process; wall time, CPU time (user + system) and peak RSS come
from ``os.wait4`` of that process:

    floor      unzip every member + bare pyarrow CSV parse ('$'-delimited, all text), two threads
    ingest     ``pipeline ingest`` of all quarters in one command (raw validation included)
    curate     ``pipeline curate`` (validation of the curated tables included)
    signals    ``pipeline signals`` (all statistics, MGPS, report tables, output validation)
    increment  one new quarter appears at the source: ``pipeline run``
    no-op      ``pipeline run`` again

Checks (the bench fails if one does not hold): raw DEMO rows + quarantined DEMO lines = DEMO data lines the
generator wrote, for every quarter; the curated funnel starts at the raw DEMO rows and each step starts where the
previous ended; the increment ingests exactly one quarter; the no-op changes nothing.

The full history (22 M reports) is generated in segments of at most ``SEGMENT_ROWS`` DEMO rows (the generator
plans a mirror in memory); follow-ups, re-ships, duplicates and deletions stay inside a segment.

Options: ``--scale X`` (default 0.02), ``--out DIR`` (default bench/out/history-<scale>; reused: an existing
mirror with the same volumes is not rewritten), ``--seed S``, ``--quarters N`` (only the first N quarters of the
history, for a quick try), ``--keep`` (keep the data folder).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
#: year, quarter and ASCII zip size of every quarter 2004Q1-2024Q1 as FDA's download page showed them on
#: 2024-07-23 (scraped by the R package Yunuuuu/faers, inst/extdata/faers_meta_data.rds; values unchanged)
INDEX_CSV = HERE / "fda_ascii_zip_sizes.csv"
REPORTS_PER_MB = 6_500
REPORTS_AFTER_2024Q1 = 420_000
LAST_HISTORY_QUARTER = "2026Q2"
INCREMENT_QUARTER = "2026Q3"
#: DEMO rows per generator run (its plan of a mirror is in memory): the full history is written in segments
SEGMENT_ROWS = 3_000_000
TARGETS = {  # full scale, 2-core / 24 GB machine
    "ingest": "<= 2x floor", "curate": "<= 300 s, <= 8 GB", "signals": "<= 180 s, <= 6 GB",
    "increment": "<= 180 s", "no-op": "<= 30 s",
}


def fda_volumes(scale: float, index_csv: Path = INDEX_CSV) -> dict[str, int]:
    """{quarter: DEMO rows} for 2004Q1..INCREMENT_QUARTER at ``scale`` (at least 20 per quarter)."""
    from pipeline.quarters import Quarter, parse_range

    full: dict[str, float] = {}
    with open(index_csv, newline="") as f:
        for row in csv.DictReader(f):
            size = row["ascii_file_size"].strip().upper()
            mb = float(size[:-2]) * {"KB": 1 / 1024, "MB": 1.0, "GB": 1024.0}[size[-2:]]
            full[str(Quarter(int(row["year"]), int(row["quarter"].strip().lower().lstrip("q"))))] = \
                mb * REPORTS_PER_MB
    last = max(full)
    for q in parse_range(f"{last}:{INCREMENT_QUARTER}"):
        if str(q) not in full:
            full[str(q)] = REPORTS_AFTER_2024Q1
    return {q: max(20, int(round(n * scale))) for q, n in sorted(full.items())}


def _timed(name: str, cmd: list[str], log: Path, env: dict | None = None) -> dict:
    """Run ``cmd`` as its own process; wall, CPU (user+sys) and peak RSS of that process.

    Measured by GNU time when present (``%M``): ``os.wait4`` of a child forked from this process would count the
    pages it shared with us before ``exec`` into its peak.
    """
    print(f"   {name}: {' '.join(cmd[2:] if cmd[:2] == [sys.executable, '-m'] else cmd)}", flush=True)
    gnu_time = shutil.which("time") or ("/usr/bin/time" if Path("/usr/bin/time").exists() else None)
    stats = log.with_suffix(".time")
    full = [gnu_time, "-f", "%e %U %S %M", "-o", str(stats), *cmd] if gnu_time else cmd
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(full, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
        _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    cpu, peak_kb = ru.ru_utime + ru.ru_stime, ru.ru_maxrss
    if gnu_time and stats.exists():
        last = stats.read_text().strip().splitlines()[-1].split()
        cpu, peak_kb = float(last[1]) + float(last[2]), int(last[3])
    res = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "peak_rss_mb": round(peak_kb / 1024),
           "exit": proc.returncode, "log": str(log)}
    print(f"   {name}: {res['wall_s']} s wall, {res['cpu_s']} s CPU, {res['peak_rss_mb']} MB peak, exit "
          f"{res['exit']}", flush=True)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        raise SystemExit(f"bench history: {name} failed (exit {proc.returncode}): " + " | ".join(tail))
    return res


def floor(zip_dir: Path) -> dict:
    """Unzip + bare pyarrow parse of every table member of every zip (the least any ingest must do)."""
    import zipfile
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa
    import pyarrow.csv as pacsv

    def read(data: bytes):
        first = data.find(b"\n") + 1
        line = data[first: data.find(b"\n", first)]
        names = [f"c{i}" for i in range(line.count(b"$") + 1)]  # fields of the first data line
        return pacsv.read_csv(
            pa.py_buffer(data),
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=1, use_threads=False,
                                           block_size=4 << 20),
            parse_options=pacsv.ParseOptions(delimiter="$", quote_char=False, escape_char=False,
                                              ignore_empty_lines=True, invalid_row_handler=lambda row: "skip"),
            convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                                 strings_can_be_null=False, check_utf8=False)).num_rows

    def parse(job):
        path, member = job
        with zipfile.ZipFile(path) as zf:
            data = zf.read(member)
        try:
            return read(data)
        except pa.ArrowInvalid:  # a bad row with cp1252 bytes cannot be shown to the row handler: transcode
            return read(data.decode("cp1252", errors="replace").encode())

    jobs = []
    for path in sorted(zip_dir.glob("*.zip")):
        with zipfile.ZipFile(path) as zf:
            jobs += [(path, i.filename) for i in zf.infolist() if i.filename.lower().endswith(".txt")
                     and i.file_size > 0]
    with ThreadPoolExecutor(max_workers=2) as pool:
        rows = sum(pool.map(parse, jobs))
    return {"members": len(jobs), "rows": rows}


def _segments(volumes: dict[str, int], rows: int) -> list[list[str]]:
    """Consecutive quarters with at most ``rows`` DEMO rows each (one quarter at least)."""
    out, cur, n = [], [], 0
    for q, v in volumes.items():
        if cur and n + v > rows:
            out.append(cur)
            cur, n = [], 0
        cur.append(q)
        n += v
    return out + [cur] if cur else out


def _mirror(out: Path, volumes: dict[str, int], seed: int) -> dict:
    """The synthetic mirror of ``volumes``; written in segments of <= SEGMENT_ROWS DEMO rows when larger.

    The generator plans a whole mirror in memory (about 0.9 GB per million reports), so the full history (22 M
    reports) is written as consecutive segments, each a mirror of its own above the caseids of the one before: a
    case's follow-ups, re-ships, duplicates and deletions stay inside its segment. Duplicates are reported the way
    another company would (``duplicate_variants``), and ``truth["patient_groups"]`` lists every group of one patient
    (caseids), so the duplicate detection is scored at this scale too.
    """
    from pipeline.quarters import parse_range
    from pipeline.synthetic import write_mirror

    truth_path = out / "mirror" / "truth.json"
    if truth_path.exists():
        truth = json.loads(truth_path.read_text())
        if truth.get("reports_per_quarter") == volumes and truth.get("seed") == seed and "patient_groups" in truth:
            print("   mirror: reused", flush=True)
            return truth
    t0 = time.perf_counter()
    segments = _segments(volumes, SEGMENT_ROWS)
    if len(segments) == 1:
        write_mirror(out / "mirror", parse_range(",".join(volumes)), reports_per_quarter=volumes, seed=seed,
                     progress=False, duplicate_variants=True)
        one = json.loads(truth_path.read_text())
        one["patient_groups"] = one["cases"]["patient_groups"]
        truth_path.write_text(json.dumps(one, indent=1) + "\n")
    else:
        merged = {"synthetic": True, "seed": seed, "reports_per_quarter": volumes, "zips": {}, "files": {},
                  "segments": [], "patient_groups": []}
        floor_id = 0
        for k, seg in enumerate(segments):
            folder = out / "mirror" / f"segment-{seg[0]}-{seg[-1]}"
            res = write_mirror(folder, parse_range(",".join(seg)), reports_per_quarter={q: volumes[q] for q in seg},
                               seed=seed + k, progress=False, caseid_floor=floor_id, duplicate_variants=True)
            floor_id = res["caseid_max"] + 1
            part = json.loads((folder / "truth.json").read_text())
            merged["patient_groups"] += part["cases"]["patient_groups"]
            for q in seg:
                name = part["zips"][q]
                (out / "mirror" / name).unlink(missing_ok=True)
                os.link(folder / name, out / "mirror" / name)
                merged["zips"][q], merged["files"][q] = name, part["files"][q]
            merged["segments"].append({"quarters": [seg[0], seg[-1]], "seed": seed + k,
                                       "demo_rows": sum(volumes[q] for q in seg), "caseid_max": res["caseid_max"]})
            print(f"   mirror: segment {seg[0]}..{seg[-1]} written ({time.perf_counter() - t0:.0f} s so far)",
                  flush=True)
        truth_path.write_text(json.dumps(merged, indent=1) + "\n")
    print(f"   mirror: {sum(volumes.values()):,} DEMO rows in {len(volumes)} quarters ({len(segments)} segment(s)) "
          f"written in {time.perf_counter() - t0:.0f} s", flush=True)
    return json.loads(truth_path.read_text())


def _checks(data: Path, truth: dict, quarters: list[str]) -> dict:
    import pyarrow.parquet as pq

    from pipeline.layout import DataDir

    dd = DataDir.of(data)
    problems, demo_rows, written_lines = [], 0, 0
    for q in quarters:
        rec = json.loads(dd.ingest_record(_q(q)).read_text())
        files = [f for f in rec["files"] if f["table"] == "DEMO"]
        rows = pq.read_metadata(dd.raw_part("DEMO", _q(q))).num_rows
        quarantined = sum(f["quarantined"] for f in files)
        lines = truth["files"][q]["DEMO"]["data_lines"]
        demo_rows += rows
        written_lines += lines
        if rows + quarantined != lines:
            problems.append(f"{q}: raw DEMO rows {rows:,} + quarantined {quarantined:,} != {lines:,} data lines")
        if not rec.get("reconciled"):
            problems.append(f"{q}: ingest record not reconciled")
    funnel = pq.read_table(dd.curated / "funnel.parquet").to_pylist()
    funnel.sort(key=lambda r: r["step"])
    if funnel[0]["reports_in"] != demo_rows:
        problems.append(f"funnel starts at {funnel[0]['reports_in']:,}, raw DEMO has {demo_rows:,} rows")
    for prev, step in zip(funnel, funnel[1:]):
        if step["reports_in"] != prev["reports_out"]:
            problems.append(f"funnel step {step['step']} starts at {step['reports_in']:,}, step {prev['step']} "
                            f"ended at {prev['reports_out']:,}")
    dup = _duplicate_scores(dd, truth["patient_groups"])
    linked = json.loads((dd.curated / "linkage_params.json").read_text()).get("linked_pairs")
    if not linked:
        problems.append("the probabilistic linkage linked no pair")
    return {"raw_demo_rows": demo_rows, "demo_data_lines_written": written_lines,
            "funnel": [(r["name"], r["reports_in"], r["reports_out"]) for r in funnel],
            "duplicates": {**dup, "linkage_linked_pairs": linked}, "problems": problems}


def _duplicate_scores(dd, patient_groups: list[list[int]]) -> dict:
    """Pairwise precision/recall of the curated duplicate groups against the generator's patient groups, over
    reports with a drug and a PT (as ``bench.bench_linkage``)."""
    import numpy as np
    import pyarrow.parquet as pq

    from bench.bench_linkage import pairwise

    t = pq.read_table(dd.curated / "reports.parquet", columns=["report_id", "dup_group_id"],
                      filters=[("has_drug", "=", True), ("has_pt", "=", True)])
    ids = t["report_id"].to_numpy()
    members = np.fromiter((x for g in patient_groups for x in g), np.int64)
    keep = set(members[np.isin(members, ids)].tolist())
    true_groups = [[x for x in g if x in keep] for g in patient_groups]
    grouped = t.filter(t["dup_group_id"].is_valid()).to_pydict()
    found: dict[int, list[int]] = {}
    for rid, gid in zip(grouped["report_id"], grouped["dup_group_id"]):
        found.setdefault(gid, []).append(rid)
    return pairwise([g for g in found.values() if len(g) > 1], [g for g in true_groups if len(g) > 1])


def _q(label: str):
    from pipeline.quarters import Quarter

    return Quarter.parse(label)


def _validation_seconds(data: Path) -> dict:
    """Seconds the raw validation summaries record (sum over quarters), to see what GX costs."""
    tot: dict[str, float] = {}
    for p in sorted((data / "validation" / "raw").glob("*.json")):
        secs = json.loads(p.read_text()).get("seconds") or {}
        for k in ("gx_context", "validation", "data_docs", "total"):
            tot[k] = round(tot.get(k, 0.0) + float(secs.get(k) or 0.0), 2)
    for name in ("curated/curated.json",):
        p = data / "validation" / name
        if p.exists():
            tot["curated"] = json.loads(p.read_text()).get("seconds")
    return tot


def main(argv: list[str]) -> dict:
    ap = argparse.ArgumentParser(prog="bench history")
    ap.add_argument("--scale", type=float, default=0.02)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=20240101)
    ap.add_argument("--quarters", type=int, default=None, help="only the first N quarters (quick try)")
    ap.add_argument("--keep", action="store_true", help="keep the data folder")
    ap.add_argument("--floor-of", type=Path, default=None, help=argparse.SUPPRESS)  # internal: the floor process
    args, _ = ap.parse_known_args(argv)
    if args.floor_of is not None:
        res = floor(args.floor_of)
        print(json.dumps(res))
        return res

    volumes = fda_volumes(args.scale)
    labels = list(volumes)
    if args.quarters:
        labels = labels[: args.quarters - 1] + [INCREMENT_QUARTER] if args.quarters > 1 else labels
        volumes = {q: volumes[q] for q in labels}
    history = [q for q in labels if q <= LAST_HISTORY_QUARTER]
    new = [q for q in labels if q > LAST_HISTORY_QUARTER]
    out = args.out or HERE / "out" / f"history-{args.scale:g}"
    out.mkdir(parents=True, exist_ok=True)
    print(f"   history: {len(history)} quarters {history[0]}..{history[-1]}, {sum(volumes[q] for q in history):,} "
          f"DEMO rows (scale {args.scale:g}); increment {new[0]} ({volumes[new[0]]:,} rows)", flush=True)
    t0 = time.perf_counter()
    truth = _mirror(out, volumes, args.seed)
    gen_s = round(time.perf_counter() - t0, 1)

    # the source folder holds the history; the increment's zip is added to it later
    src, data, logs = out / "source", out / "data", out / "logs"
    for p in (src, data):
        shutil.rmtree(p, ignore_errors=True)
    src.mkdir()
    logs.mkdir(exist_ok=True)
    for q in history:
        os.link(out / "mirror" / truth["zips"][q], src / truth["zips"][q])
    zip_mb = sum((src / truth["zips"][q]).stat().st_size for q in history) / 1e6
    py = [sys.executable, "-m"]
    cli = py + ["pipeline", "--quiet", "--verbose"]
    results: dict[str, dict] = {}
    _timed("fetch", cli + ["fetch", "--source", str(src), "--data-dir", str(data)], logs / "fetch.log")
    results["floor"] = _timed("floor", py + ["bench.bench_history", "--floor-of", str(data / "landing")],
                              logs / "floor.log")
    results["ingest"] = _timed("ingest", cli + ["ingest", "--data-dir", str(data)], logs / "ingest.log")
    raw_validation = _validation_seconds(data)
    results["curate"] = _timed("curate", cli + ["curate", "--data-dir", str(data)], logs / "curate.log")
    results["signals"] = _timed("signals", cli + ["signals", "--data-dir", str(data)], logs / "signals.log")
    for q in new:
        os.link(out / "mirror" / truth["zips"][q], src / truth["zips"][q])
    results["increment"] = _timed("increment", cli + ["run", "--source", str(src), "--data-dir", str(data)],
                                  logs / "increment.log")
    results["no-op"] = _timed("no-op", cli + ["run", "--source", str(src), "--data-dir", str(data)],
                              logs / "noop.log")
    checks = _checks(data, truth, labels)
    inc_log = (logs / "increment.log").read_text()
    if f"run: {len(new)} quarter(s) fetched/ingested" not in inc_log:
        checks["problems"].append(f"increment did not ingest exactly {len(new)} quarter(s)")
    if "run: nothing new" not in (logs / "noop.log").read_text():
        checks["problems"].append("the no-op run was not a no-op")
    validation = _validation_seconds(data)
    validation["raw_after_ingest"] = raw_validation
    summary = {
        "scale": args.scale, "quarters": len(history), "increment_quarters": new,
        "demo_rows_history": sum(volumes[q] for q in history), "zip_mb_history": round(zip_mb, 1),
        "generate_s": gen_s, "steps": results, "checks": checks, "validation_seconds": validation,
        "targets_full_scale": TARGETS,
    }
    print("\n   step        wall s    CPU s   peak RSS MB")
    for name, r in results.items():
        print(f"   {name:<10} {r['wall_s']:>8} {r['cpu_s']:>8} {r['peak_rss_mb']:>10}")
    d = checks["duplicates"]
    print(f"   duplicates: {d['true_pairs']:,} true pairs; rules + linkage precision {d['precision']}, recall "
          f"{d['recall']} ({d['linkage_linked_pairs']:,} pairs linked by the linkage)")
    print(f"   checks: raw DEMO rows {checks['raw_demo_rows']:,} (data lines written "
          f"{checks['demo_data_lines_written']:,}); problems: {checks['problems'] or 'none'}", flush=True)
    (out / "result.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    if not args.keep:
        shutil.rmtree(data, ignore_errors=True)
    if checks["problems"]:
        raise SystemExit("bench history: " + "; ".join(checks["problems"]))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
