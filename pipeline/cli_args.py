"""Command-line pieces several commands share, spelled once (the README's CLI reference is generated from them).

Standard library only: every command's parser is built before any heavy import.
"""

from __future__ import annotations

import argparse


def add_command(subparsers, name: str, func, help_: str) -> argparse.ArgumentParser:
    """A sub-command whose help and description are the same sentence, dispatching to ``func(args)``."""
    p = subparsers.add_parser(name, help=help_, description=help_)
    p.set_defaults(func=func)
    return p


def add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE",
                   help="configuration file (default: $FAERS_CONFIG, else the shipped pipeline/default_config.toml)")


def add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", metavar="DIR", help="data directory (default: $FAERS_DATA_DIR or ./data)")
