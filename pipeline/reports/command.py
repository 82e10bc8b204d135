"""CLI commands ``signals`` and ``show`` (wired by ``pipeline.cli`` through :func:`register`)."""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.vocabulary import FOCUS_SUBSTANCES, MGPS_LIKELIHOODS, ROLE_CODES


def _csv(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [x.strip() for x in text.split(",") if x.strip()] or None


def cmd_signals(args) -> int:
    from pipeline.layout import DataDir
    from pipeline.reports.build import build_report
    from pipeline.reports.terminal import focus_table_text
    from pipeline.settings import load_config

    config = load_config(args.config)
    result = build_report(DataDir.of(args.data_dir), config, progress=not getattr(args, "quiet", False),
                          substances=_csv(args.substances), pt_groups=_csv(args.pt_groups), roles=_csv(args.roles),
                          mgps_likelihood=args.mgps_likelihood, cutoff_quarter=args.cutoff_quarter,
                          from_quarter=args.from_quarter, force=args.force)
    if result["changed"]:
        print(f"signals: report {result['run_id']} written to {result['report_dir']}")
    else:
        print(f"signals: inputs, config and parameters unchanged; latest report kept ({result['report_dir']})")
    print(focus_table_text(Path(result["report_dir"])))
    return 0


def cmd_show(args) -> int:
    from pipeline.layout import DataDir
    from pipeline.reports.publish import latest_report_dir
    from pipeline.reports.terminal import focus_table_text

    data_dir = DataDir.of(args.data_dir)
    if args.run:
        report = data_dir.reports / args.run
        if not (report / "manifest.json").exists():
            raise PipelineError(f"show: no report {args.run!r} in {data_dir.reports}")
    else:
        report = latest_report_dir(data_dir)
        if report is None:
            raise PipelineError(f"show: no report in {data_dir.reports} (run `pipeline signals` first)")
    print(focus_table_text(report, substance=_csv(args.substance), pt_group=_csv(args.pt_group), pt=_csv(args.pt),
                           limit=args.limit, top_pts=args.top))
    return 0


def register(subparsers) -> None:
    """Add ``signals`` and ``show`` to an argparse sub-parsers object."""
    h = ("curated tables -> disproportionality statistics -> report folder DIR/reports/<run_id>/ "
         "(prints the focus table)")
    p = subparsers.add_parser("signals", help=h, description=h)
    p.set_defaults(func=cmd_signals)
    p.add_argument("--config", metavar="FILE",
                   help="configuration file (default: the shipped pipeline/default_config.toml)")
    p.add_argument("--data-dir", metavar="DIR", help="data directory (default: $FAERS_DATA_DIR or ./data)")
    p.add_argument("--substances", metavar="LIST",
                   help=f"comma list overriding the focus substances ({', '.join(FOCUS_SUBSTANCES)})")
    p.add_argument("--pt-groups", metavar="LIST", help="comma list of configured PT groups to report (default: all)")
    p.add_argument("--roles", metavar="LIST",
                   help=f"comma list of exposure role codes ({', '.join(ROLE_CODES)}; default: config)")
    p.add_argument("--mgps-likelihood", choices=MGPS_LIKELIHOODS, metavar="L",
                   help=f"MGPS prior likelihood: {', '.join(MGPS_LIKELIHOODS[:-1])} or {MGPS_LIKELIHOODS[-1]} "
                        f"(default: config)")
    p.add_argument("--cutoff-quarter", metavar="Q",
                   help="the database as it stood at the end of quarter Q, e.g. 2024Q2: each case at its latest "
                        "version received by Q, deleted-case lists up to Q only, duplicate flags re-derived")
    p.add_argument("--from-quarter", metavar="Q",
                   help="study window: only cases first received in quarter Q or later (init_fda_dt, else the "
                        "first quarterly file carrying the case), report and background alike")
    p.add_argument("--force", action="store_true", help="rebuild even when inputs and parameters are unchanged")

    h = "print a slice of the latest report (default: every substance x PT group)"
    p = subparsers.add_parser("show", help=h, description=h)
    p.set_defaults(func=cmd_show)
    p.add_argument("--substance", metavar="LIST", help="comma list of substances")
    p.add_argument("--pt-group", metavar="LIST", help="comma list of PT groups")
    p.add_argument("--pt", metavar="LIST", help="comma list of PTs (case-insensitive)")
    p.add_argument("--top", metavar="N", type=int, default=0,
                   help="also show each substance's N best PTs by ROR lower bound")
    p.add_argument("--limit", metavar="N", type=int, help="print at most N rows")
    p.add_argument("--run", metavar="RUN_ID", help="a run id instead of the latest report")
    p.add_argument("--data-dir", metavar="DIR", help="data directory (default: $FAERS_DATA_DIR or ./data)")
