"""Benchmark: one real-scale synthetic quarter (450,000 reports) must generate in under 60 s.

``python -m bench sample`` (harness) or ``python -m bench.bench_sample [--reports N] [--quarter 2023Q1]``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 60.0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="bench_sample")
    ap.add_argument("--reports", type=int, default=450_000)
    ap.add_argument("--quarter", default="2023Q1")
    ap.add_argument("--seed", type=int, default=20240101)
    ap.add_argument("--level", type=int, default=6, help="zip deflate level (default 6, like FDA's sizes)")
    ap.add_argument("--keep", help="write the mirror here and keep it")
    args, _ = ap.parse_known_args([a for a in (argv or []) if a != "--child"])

    from pipeline.quarters import parse_range
    from pipeline.synthetic import write_mirror

    out = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_sample_"))
    try:
        t0 = time.perf_counter()
        summary = write_mirror(out, parse_range(args.quarter), reports_per_quarter=args.reports, seed=args.seed,
                               progress=True, compresslevel=args.level)
        seconds = time.perf_counter() - t0
        zips = sorted(out.glob("*.zip"))
        size = sum(z.stat().st_size for z in zips)
        import zipfile

        unzipped = sum(i.file_size for z in zips for i in zipfile.ZipFile(z).infolist())
        result = {
            "quarter": args.quarter, "reports": args.reports, "level": args.level, "seconds": round(seconds, 2),
            "model_seconds": summary["model_seconds"], "zip_mb": round(size / 1e6, 1),
            "unzipped_mb": round(unzipped / 1e6, 1), "reports_total": summary["reports_total"],
            "target_s": TARGET_S, "ok": seconds < TARGET_S,
        }
        print(f"sample: {args.reports:,} reports of {args.quarter} in {seconds:.1f}s "
              f"(model {summary['model_seconds']}s), zip {size / 1e6:.1f} MB, unzipped {unzipped / 1e6:.1f} MB "
              f"-> {'OK' if seconds < TARGET_S else 'TOO SLOW'} (target < {TARGET_S:.0f}s)")
        return result
    finally:
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    res = main(sys.argv[1:])
    raise SystemExit(0 if res.get("ok") else 1)
