"""Packaging hook: the Great Expectations suites in ``expectations/`` ship inside the package.

The suites stay in the repository's top-level ``expectations/`` folder; a build copies them to
``pipeline/_suites/`` so that an installed (non-editable) package validates without the repository.
Everything else is declared in ``pyproject.toml``.
"""

from pathlib import Path
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithSuites(build_py):
    def run(self):
        super().run()
        suites = sorted((ROOT / "expectations").glob("*.json"))
        if not suites:  # a package without its suites would fail only at the first validation
            raise RuntimeError(f"no expectation suites in {ROOT / 'expectations'} (see MANIFEST.in)")
        target = Path(self.build_lib) / "pipeline" / "_suites"
        target.mkdir(parents=True, exist_ok=True)
        for suite in suites:
            shutil.copy2(suite, target / suite.name)


setup(cmdclass={"build_py": BuildPyWithSuites})
