"""The demo output in the README is what `make demo` prints (run id and times masked)."""

from __future__ import annotations

import pytest

from pipeline import readme_demo


def test_masking_keeps_numbers_and_hides_only_run_ids_and_times():
    raw = "run 20261204T093351Z-a3fd0c31 took (20.16s) · 28,574 reports · EB05 9.55"
    assert readme_demo.masked(raw) == "run <run_id> took (…s) · 28,574 reports · EB05 9.55"


def test_a_changed_number_makes_the_readme_stale(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{readme_demo.START}\n{readme_demo.END}\nrest\n")
    monkeypatch.setattr(readme_demo, "README", readme)
    readme_demo.write("a 9 EB05 9.55")
    assert readme_demo.is_current("a 9 EB05 9.55")
    assert not readme_demo.is_current("a 9 EB05 9.56")
    assert readme.read_text().startswith("intro\n") and readme.read_text().endswith("rest\n")


@pytest.mark.slow
def test_readme_shows_the_current_demo_output():
    out = readme_demo.demo_output()
    assert "SYNTHETIC DATA" in out and "report: data/reports/<run_id>/report.html" in out
    assert readme_demo.is_current(out), "README demo output is stale: run `python -m pipeline.readme_demo --write`"
