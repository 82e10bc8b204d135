"""Where the expectation suites are found: the checkout's ``expectations/`` folder, else the copy an installed
package carries (``pipeline/_suites``, written by ``setup.py``); a source distribution carries the suites, so a
wheel built from it validates too. The full wheel round trip is tests/test_packaging.py (slow)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from pipeline.quality.suites import suites_dir

ROOT = Path(__file__).resolve().parents[1]
SUITES = sorted(p.name for p in (ROOT / "expectations").glob("*.json"))


def _env_without_override() -> dict:
    return {k: v for k, v in os.environ.items() if k != "FAERS_EXPECTATIONS_DIR"}


def test_a_checkout_uses_the_repository_folder(monkeypatch):
    monkeypatch.delenv("FAERS_EXPECTATIONS_DIR", raising=False)
    assert suites_dir() == ROOT / "expectations"
    assert SUITES


def test_the_environment_variable_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("FAERS_EXPECTATIONS_DIR", str(tmp_path))
    assert suites_dir() == tmp_path


def test_an_installed_copy_without_the_checkout_uses_its_own_suites(tmp_path):
    site = tmp_path / "site"
    shutil.copytree(ROOT / "pipeline", site / "pipeline", ignore=shutil.ignore_patterns("__pycache__", "_suites"))
    shutil.copytree(ROOT / "expectations", site / "pipeline" / "_suites")
    env = {**_env_without_override(), "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-c", "import pipeline.quality as q; print(q.EXPECTATIONS_DIR); "
                          "print(q.raw_suite_name('DEMO', 'faers_b'))"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [str(site / "pipeline" / "_suites"), "raw_demo_faers_b"]


def test_the_source_distribution_carries_the_suites(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md", "MANIFEST.in"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "pipeline", src / "pipeline", ignore=shutil.ignore_patterns("__pycache__", "_suites"))
    shutil.copytree(ROOT / "expectations", src / "expectations")
    out = subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path / "dist")], cwd=src,
                         env=_env_without_override(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    with tarfile.open(next((tmp_path / "dist").glob("*.tar.gz"))) as tar:
        names = tar.getnames()
    shipped = sorted(Path(n).name for n in names if Path(n).parent.name == "expectations" and n.endswith(".json"))
    assert shipped == SUITES
