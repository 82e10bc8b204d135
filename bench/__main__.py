"""Run the benchmarks: ``python -m bench [name ...] [options]`` (``make bench BENCH_ARGS="history --scale 0.02"``).

Without names, every benchmark but ``history`` (the whole FAERS history, minutes to hours) runs.

Each ``bench/bench_<name>.py`` has ``main(argv) -> dict`` and is run in its own
subprocess so its peak RSS is its own. Results are printed and written to
``bench/out/results.json``.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _names() -> list[str]:
    return sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([str(HERE)]) if m.name.startswith("bench_"))


def _child(name: str, argv: list[str]) -> None:
    import resource

    module = importlib.import_module(f"bench.bench_{name}")
    result = module.main(argv) or {}
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print("BENCH-RESULT " + json.dumps(result), flush=True)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        _child(argv[1], argv[2:])
        return 0
    names = _names()
    wanted = [a for a in argv if a in names] or [n for n in names if n != "history"]  # history: on request
    options = [a for a in argv if a not in names]  # passed on with their values (--scale 0.02)
    out_dir = HERE / "out"
    out_dir.mkdir(exist_ok=True)
    results = {}
    for name in wanted:
        print(f"== bench {name}", flush=True)
        t0 = time.perf_counter()
        lines = []
        # streamed, so an hour-long history bench shows each step as it ends
        with subprocess.Popen([sys.executable, "-m", "bench", "--child", name, *options], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}) as proc:
            for line in proc.stdout:
                lines.append(line.rstrip("\n"))
                if not line.startswith("BENCH-RESULT "):
                    print("   " + lines[-1], flush=True)
        found = [json.loads(line[len("BENCH-RESULT "):]) for line in lines if line.startswith("BENCH-RESULT ")]
        res = found[-1] if found else {"error": f"exit {proc.returncode}"}
        res["wall_s"] = round(time.perf_counter() - t0, 2)
        results[name] = res
        print(f"   result: {json.dumps(res)}", flush=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all("error" not in r for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
