"""The ``make demo`` output shown in the README, made by running the demo so it cannot drift.

``python -m pipeline.readme_demo --write`` runs ``pipeline demo`` in a scratch folder and puts its standard output
between the ``demo:start``/``demo:end`` markers of ``README.md``; ``--check`` exits 1 when the README shows
something else. Run ids and timings change on every run and are masked; everything else (counts, statistics,
flags) is deterministic for the demo's fixed seed and is compared exactly. A slow test runs the check.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

from pipeline.cli_reference import README, ROOT, spliced

START = "<!-- demo:start: made by `python -m pipeline.readme_demo --write`; do not edit by hand -->"
END = "<!-- demo:end -->"
RUN_ID = re.compile(r"\b\d{8}T\d{6}Z-[0-9a-f]{8}\b")
SECONDS = re.compile(r"\(\d+(?:\.\d+)?s\)")


def masked(stdout: str) -> str:
    """The demo's output with the run id and wall times replaced by placeholders."""
    return SECONDS.sub("(…s)", RUN_ID.sub("<run_id>", stdout)).rstrip()


def demo_output(timeout: float = 900) -> str:
    """Run ``pipeline demo --data-dir data`` in a temporary folder; its standard output, masked."""
    with tempfile.TemporaryDirectory(prefix="readme-demo-") as tmp:
        proc = subprocess.run([sys.executable, "-m", "pipeline", "--quiet", "demo", "--data-dir", "data"],
                              cwd=tmp, capture_output=True, text=True, timeout=timeout,
                              env=_env())
        if proc.returncode != 0:
            raise SystemExit(f"pipeline demo failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
        # the CLI prints absolute paths; the README shows them relative to the folder the demo ran in
        stdout = proc.stdout
        for folder in {tmp, str(Path(tmp).resolve())}:
            stdout = stdout.replace(folder + "/", "")
    return masked(stdout)


def _env() -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("FAERS_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def block(output: str) -> str:
    return f"```\n{output}\n```"


def is_current(output: str) -> bool:
    text = README.read_text()
    return text == spliced(text, block(output), START, END)


def write(output: str) -> None:
    README.write_text(spliced(README.read_text(), block(output), START, END))


if __name__ == "__main__":
    out = demo_output()
    if "--write" in sys.argv[1:]:
        write(out)
    elif not is_current(out):
        print("README's demo output is stale (run: python -m pipeline.readme_demo --write)", file=sys.stderr)
        raise SystemExit(1)
