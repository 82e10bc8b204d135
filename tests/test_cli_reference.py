"""The README's command table and docs/cli.md are made from the parser; stale copies fail here."""

from __future__ import annotations

import subprocess
import sys

from pipeline import cli_reference


def test_reference_is_current():
    stale = cli_reference.stale()
    assert not stale, f"run `python -m pipeline.cli_reference --write` ({', '.join(map(str, stale))} is stale)"


def test_every_command_and_option_is_in_the_reference():
    from pipeline.cli import build_parser

    doc = cli_reference.CLI_DOC.read_text()
    readme = cli_reference.README.read_text()
    for name, p, _ in cli_reference.subcommands(build_parser()):
        assert f"## `{name}`" in doc and f"| `{name}" in readme, name
        for action in p._actions:
            for opt in action.option_strings:
                assert opt in doc, (name, opt)


def test_check_mode_fails_on_a_stale_readme(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    text = cli_reference.README.read_text()
    readme.write_text(text.replace("| `curate", "| `curate --old-option", 1))
    monkeypatch.setattr(cli_reference, "README", readme)
    assert cli_reference.stale() == [readme]
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli_reference", "--check"], capture_output=True,
                          text=True, cwd=cli_reference.ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr  # the real files are current
