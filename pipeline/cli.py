"""Command line: ``python -m pipeline <command>`` (also installed as ``faers-pipeline``).

Every command exits 0 on success; on bad input it prints one line ``error: <reason>``
to stderr and exits non-zero (``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pipeline import __version__
from pipeline.cli_args import add_command, add_config, add_data_dir
from pipeline.errors import OS_ERROR_EXIT, PipelineError
from pipeline.vocabulary import FDA_QUARTERLY_PAGE

log = logging.getLogger("pipeline")


def _data_dir(args):
    from pipeline.layout import DataDir

    return DataDir.of(args.data_dir)


def _quarters(args):
    from pipeline.quarters import parse_range

    return parse_range(getattr(args, "quarters", None))


def _source(args) -> str:
    import os

    return args.source or os.environ.get("FAERS_SOURCE") or FDA_QUARTERLY_PAGE


def cmd_sample(args) -> int:
    from pipeline.quarters import parse_range
    from pipeline.synthetic import write_mirror

    quarters = parse_range(args.quarters)
    summary = write_mirror(Path(args.out), quarters, reports_per_quarter=args.reports_per_quarter,
                           seed=args.seed, progress=not args.quiet,
                           duplicate_variants=args.duplicate_variants)
    print(f"synthetic FAERS mirror: {len(summary['quarters'])} quarter(s) in {args.out} "
          f"({summary['reports_total']:,} reports; SYNTHETIC DATA, not FDA's)")
    return 0


def cmd_fetch(args) -> int:
    from pipeline.sources import fetch

    result = fetch(_source(args), _data_dir(args), quarters=_quarters(args), progress=not args.quiet)
    print(result.summary_line())
    return 0


def cmd_ingest(args) -> int:
    from pipeline.ingest import ingest
    from pipeline.settings import load_config

    gates = load_config(args.config).gates
    # one bad quarter does not stop the others: they are ingested, the bad ones named, the exit is non-zero
    results = ingest(_data_dir(args), quarters=_quarters(args), force=args.force, progress=not args.quiet,
                     keep_going=True, quarantine_max=gates.quarantine_rate_max)
    failed = [r for r in results if r.error is not None]
    done = [r for r in results if not r.skipped and r.error is None]
    print(f"ingested {len(done)} quarter(s), {len(results) - len(done) - len(failed)} unchanged"
          + (f", {len(failed)} failed" if failed else "")
          + "".join(f"\n  {r.summary_line()}" for r in done))
    warnings = sum(len((r.validation or {}).get("warnings") or []) for r in done)
    if warnings:
        print(f"validation: {warnings} warning(s), no critical failure (details in "
              f"{_data_dir(args).validation / 'raw'}/*.json)")
    for r in failed:
        print(f"error: {r.quarter} not ingested: {r.error}", file=sys.stderr)
    return failed[0].error.exit_code if failed else 0


def cmd_curate(args) -> int:
    from pipeline.runner import curate_all

    summary = curate_all(_data_dir(args), args.config, progress=not args.quiet, force=args.force)
    if not summary.get("changed", True):
        print("curate: inputs and config unchanged; curated tables kept")
    else:
        print(_funnel_text(summary))
    return 0


def _funnel_text(summary: dict) -> str:
    lines = [f"curated tables in {summary.get('curated_dir', '')}"]
    for step in summary.get("funnel", []):
        lines.append(f"  {step['name']:<44} {step['reports_in']:>10,} -> {step['reports_out']:>10,}")
    return "\n".join(lines)


def cmd_run(args) -> int:
    from pipeline.runner import run

    result = run(_source(args), _data_dir(args), _quarters(args), args.config, progress=not args.quiet)
    _print_run(result)
    return 0


def _print_run(result: dict) -> None:
    n = len(result["quarters"])
    if not result["changed"]:
        print(f"run: nothing new ({result['seconds']}s); latest report: {result['signals'].get('report_dir')}")
        return
    print(f"run: {n} quarter(s) fetched/ingested, curated, report in {result['signals'].get('report_dir')} "
          f"({result['seconds']}s)")
    warnings = sum(len((q.get("validation") or {}).get("warnings") or []) for q in result["quarters"])
    warnings += len(((result.get("curate") or {}).get("validation") or {}).get("warnings") or [])
    if warnings:
        print(f"validation: {warnings} warning(s), no critical failure (details: DIR/validation/*.json, "
              f"or rerun with --verbose)")
    report_dir = result["signals"].get("report_dir")
    if report_dir:
        from pipeline.reports import focus_table_text

        print(focus_table_text(Path(report_dir)))


def cmd_demo(args) -> int:
    from pipeline.quarters import parse_range
    from pipeline.runner import run
    from pipeline.synthetic import write_mirror

    data_dir = _data_dir(args)
    mirror = data_dir.root / "mirror"
    quarters = parse_range(args.quarters)
    truth = mirror / "truth.json"
    wanted = {"quarters": [str(q) for q in quarters], "reports_per_quarter": args.reports_per_quarter,
              "seed": args.seed}
    if not truth.exists() or any(json.loads(truth.read_text()).get(k) != v for k, v in wanted.items()):
        print(f"demo: writing a synthetic FAERS mirror ({len(quarters)} quarters x "
              f"{args.reports_per_quarter:,} reports) to {mirror}")
        write_mirror(mirror, quarters, reports_per_quarter=args.reports_per_quarter, seed=args.seed,
                     progress=not args.quiet)
    result = run((mirror / "index.html").resolve().as_uri(), data_dir, None, args.config, progress=not args.quiet)
    _print_run(result)
    report = result["signals"].get("report_dir")
    if report:
        print(f"\nopen {Path(report) / 'report.html'} in a browser (SYNTHETIC DATA: the numbers show how the "
              f"pipeline works, not real drug safety).")
    return 0


#: commands that write into the data directory: they hold its lock (pipeline/lock.py) while they run
WRITERS = ("fetch", "ingest", "curate", "run", "demo", "signals", "study")


def _run_locked(args) -> int:
    from pipeline.lock import data_dir_lock

    with data_dir_lock(_data_dir(args), wait=args.wait):
        return int(args.func(args) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline",
        description="FAERS disproportionality pipeline for ketamine-family substances. "
                    "Signals of disproportionate reporting are not evidence of causation.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    parser.add_argument("--verbose", action="store_true", help="log each step's counts (INFO)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="command", required=True)

    def add(name, func, help_):
        return add_command(sub, name, func, help_)

    data_dir = add_data_dir

    def quarters(p, help_="quarters, e.g. 2023Q1:2024Q4, 2024Q3 or 2023Q1,2024Q2 (default: all)"):
        p.add_argument("--quarters", metavar="RANGE", help=help_)

    p = add("sample", cmd_sample, "write a synthetic FAERS mirror in FDA's exact quarterly ASCII layout")
    p.add_argument("--out", required=True, metavar="MIRROR", help="mirror folder to write")
    quarters(p, "quarters to generate (default 2023Q1:2024Q4)")
    p.add_argument("--reports-per-quarter", type=int, default=2000, metavar="N",
                   help="DEMO rows per quarter (default 2000)")
    p.add_argument("--seed", type=int, default=20240101, metavar="S", help="random seed (default 20240101)")
    p.add_argument("--duplicate-variants", action="store_true",
                   help="more cross-company duplicate reports, each differing as real ones do (missing fields, dates "
                        "off by days, a PT added or dropped, other product names); truth.json lists the groups")
    p.set_defaults(quarters="2023Q1:2024Q4")

    p = add("fetch", cmd_fetch, "download new or changed quarterly zips into DIR/landing/")
    p.add_argument("--source", help="FDA's quarterly-files page (default), any http(s) page or folder "
                                    "listing the zips, a file:// URL or a local folder ($FAERS_SOURCE)")
    quarters(p)
    data_dir(p)

    p = add("ingest", cmd_ingest, "parse landing zips into typed raw tables (DIR/raw/), quarantine bad lines")
    quarters(p)
    add_config(p)
    data_dir(p)
    p.add_argument("--force", action="store_true", help="re-ingest quarters even when unchanged")

    p = add("curate", cmd_curate, "de-duplicate cases and apply the case definition: DIR/raw -> DIR/curated")
    add_config(p)
    data_dir(p)
    p.add_argument("--force", action="store_true", help="re-curate even when inputs, config and code are unchanged")

    p = add("run", cmd_run, "fetch, ingest, curate and signals in one go (a quick no-op when nothing changed)")
    p.add_argument("--source", help="as for fetch ($FAERS_SOURCE; default FDA's quarterly-files page)")
    quarters(p)
    add_config(p)
    data_dir(p)

    p = add("demo", cmd_demo, "offline end to end: a synthetic mirror in DIR/mirror, then run on it")
    data_dir(p)
    add_config(p)
    p.add_argument("--quarters", default="2023Q1:2024Q4", metavar="RANGE",
                   help="synthetic quarters (default 2023Q1:2024Q4)")
    p.add_argument("--reports-per-quarter", type=int, default=5000, metavar="N",
                   help="synthetic reports per quarter (default 5000)")
    p.add_argument("--seed", type=int, default=20240101, metavar="S", help="random seed (default 20240101)")

    from pipeline.reports import register as register_reports
    from pipeline.stats.command import register as register_disproportionality

    from pipeline.analyses.study import register as register_study

    register_reports(sub)
    register_disproportionality(sub)
    register_study(sub)
    for name in WRITERS:
        sub.choices[name].add_argument(
            "--wait", action="store_true",
            help="if another run holds the data directory, wait for it (default: refuse at once, exit 75)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Progress bars and the printed summaries are the CLI's output; step logs are opt-in.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    logging.getLogger("pipeline").setLevel(logging.DEBUG if args.debug else
                                           logging.INFO if args.verbose else logging.WARNING)
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    if not (args.verbose or args.debug):
        # validation warnings are written to DIR/validation/ and counted in the command's summary
        logging.getLogger("pipeline.quality").setLevel(logging.ERROR)
    try:
        return _run_locked(args) if args.command in WRITERS else int(args.func(args) or 0)
    except PipelineError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if args.debug:
            raise
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return OS_ERROR_EXIT
    except Exception as exc:
        oom = _out_of_memory(exc, args.command)
        if oom is None or args.debug:
            raise
        print(f"error: {oom}", file=sys.stderr)
        return oom.exit_code


def _out_of_memory(exc: BaseException, command: str):
    """A ResourceError for DuckDB's OutOfMemoryException or Python's MemoryError raised outside
    :func:`pipeline.duck.connect`; ``None`` for anything else (a bug: keep the traceback)."""
    duckdb = sys.modules.get("duckdb")
    if not (isinstance(exc, MemoryError) or (duckdb is not None and isinstance(exc, duckdb.OutOfMemoryException))):
        return None
    from pipeline import duck

    try:
        with duck.translate(label=command):
            raise exc
    except PipelineError as translated:
        return translated
    return None
