"""The command-line reference, made from the parser so it cannot drift from ``--help``.

``python -m pipeline.cli_reference --write`` rewrites the command table in ``README.md`` (between the
``cli:start``/``cli:end`` markers) and ``docs/cli.md`` (every command's full help); ``--check`` exits 1 when
either is stale. A test runs the check.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CLI_DOC = ROOT / "docs" / "cli.md"
START = "<!-- cli:start: made by `python -m pipeline.cli_reference --write`; do not edit by hand -->"
END = "<!-- cli:end -->"
WIDTH = 110


def _parser() -> argparse.ArgumentParser:
    from pipeline.cli import build_parser

    return build_parser()


def subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser, str]]:
    """(name, parser, one-line help) of every subcommand, in the order ``--help`` lists them."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            return [(name, p, helps.get(name, "")) for name, p in action.choices.items()]
    return []


def _fixed_width(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.formatter_class = lambda prog: argparse.HelpFormatter(prog, width=WIDTH)
    return p


def synopsis(name: str, p: argparse.ArgumentParser) -> str:
    """``name [--opt X] ...`` without the program name and ``-h``."""
    usage = " ".join(_fixed_width(p).format_usage().split())
    usage = usage.removeprefix("usage: ").removeprefix(p.prog).replace("[-h] ", "").replace(" [-h]", "").strip()
    return f"{name} {usage}".strip()


def readme_table(parser: argparse.ArgumentParser | None = None) -> str:
    parser = parser or _parser()
    rows = ["| command | what it does |", "|---|---|"]
    for name, p, help_ in subcommands(parser):
        rows.append(f"| `{synopsis(name, p)}`".replace("|", "\\|").replace("\\| `", "| `", 1)
                    + f" | {help_} |")
    return "\n".join(rows)


def full_reference(parser: argparse.ArgumentParser | None = None) -> str:
    parser = parser or _parser()
    parts = ["# Command-line reference", "",
             "Made from the parser by `python -m pipeline.cli_reference --write`; a test fails when it is stale.",
             "Run any command as `python -m pipeline COMMAND` (global options `--debug`, `--verbose`, `--quiet` "
             "come before the command).", ""]
    for name, p, _ in subcommands(parser):
        parts += [f"## `{name}`", "", "```text", _fixed_width(p).format_help().rstrip(), "```", ""]
    return "\n".join(parts)


def spliced(text: str, block: str, start: str = START, end: str = END) -> str:
    """``text`` with what lies between the ``start`` and ``end`` marker lines replaced by ``block``."""
    try:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
    except ValueError:
        raise SystemExit(f"{README}: the {start!r} ... {end!r} markers are missing") from None
    return f"{head}{start}\n{block}\n{end}{tail}"


def stale() -> list[Path]:
    """The files whose command reference differs from the parser's."""
    parser = _parser()
    out = []
    if README.read_text() != spliced(README.read_text(), readme_table(parser)):
        out.append(README)
    if not CLI_DOC.exists() or CLI_DOC.read_text() != full_reference(parser):
        out.append(CLI_DOC)
    return out


def write() -> None:
    parser = _parser()
    README.write_text(spliced(README.read_text(), readme_table(parser)))
    CLI_DOC.write_text(full_reference(parser))


if __name__ == "__main__":
    if "--write" in sys.argv[1:]:
        write()
    elif bad := stale():
        print("stale command reference: " + ", ".join(str(p.relative_to(ROOT)) for p in bad)
              + " (run: python -m pipeline.cli_reference --write)", file=sys.stderr)
        raise SystemExit(1)
