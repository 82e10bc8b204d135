"""How the report's stages meet: one direction of imports, the population handed over as an object, and a
``latest`` whose folder is gone."""

from __future__ import annotations

import ast
import dataclasses
import shutil
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
REPORTS = ROOT / "pipeline" / "reports"


def _imports(path: Path, *, module_level: bool) -> set[str]:
    """Modules of ``pipeline.reports`` that ``path`` imports, outside ``if TYPE_CHECKING:`` blocks (only the
    module's own statements with ``module_level``, else also those inside functions)."""
    tree = ast.parse(path.read_text())
    nodes = [n for n in tree.body if not (isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test))]
    if not module_level:
        nodes = [n for top in nodes for n in ast.walk(top)]
    out = set()
    for node in nodes:
        if not isinstance(node, ast.ImportFrom) or not node.module:
            continue
        if node.module == "pipeline.reports":
            out |= {a.name for a in node.names}
        elif node.module.startswith("pipeline.reports."):
            out.add(node.module.split(".")[2])
    return out


def test_report_modules_import_without_cycles_and_no_stage_imports_build():
    modules = [p for p in REPORTS.glob("*.py") if p.stem != "__init__"]
    stages = ("params", "dating", "population", "scoring", "trend", "manifest", "publish")
    anywhere = {p.stem: _imports(p, module_level=False) for p in modules}
    assert not [m for m in stages if "build" in anywhere[m]]
    graph = {p.stem: _imports(p, module_level=True) for p in modules}
    done: set[str] = set()

    def visit(m: str, path: tuple[str, ...]) -> None:
        assert m not in path, " -> ".join(path + (m,))
        if m in done or m not in graph:
            return
        for d in sorted(graph[m]):
            visit(d, path + (m,))
        done.add(m)

    for m in sorted(graph):
        visit(m, ())
    assert "trend" in graph["build"] and "build" not in graph["trend"]


def test_trend_reads_the_population_it_is_given(curated, config):
    """Rename every relation of the population: the trend, given the renamed object, counts the same."""
    import duckdb

    from pipeline.reports import population, scoring, trend
    from pipeline.reports.params import resolve_params

    root, _ = curated
    cur = root / "curated"
    params = {**resolve_params(config), "trend_top_pts": 3}
    con = duckdb.connect()
    try:
        pop = population.register_population(con, cur, config, params)
        prior = scoring.fit_prior(population.background(pop, params), {"columns": []}, params["mgps_likelihood"])
        signals = scoring.signals_table(population.focus_counts(pop, params, prior.strata),
                                        population.indication_counts(pop), prior, config, params)
        before = trend.cumulative_trend(pop, signals, params, config, prior.fit, group_prefix=scoring.GROUP_PREFIX,
                                        curated=cur)
        renamed = {}
        for field in ("reports", "focus_exposures", "events", "group_events"):
            old = getattr(pop, field)
            con.execute(f"ALTER TABLE {old} RENAME TO moved_{old}")
            renamed[field] = f"moved_{old}"
        con.unregister(pop.group_members)
        con.register("moved_groups", pop.groups)
        moved = dataclasses.replace(pop, group_members="moved_groups", **renamed)
        after = trend.cumulative_trend(moved, signals, params, config, prior.fit, group_prefix=scoring.GROUP_PREFIX,
                                       curated=cur)
    finally:
        con.close()
    assert len(before) > 0
    pd.testing.assert_frame_equal(before, after)


def test_latest_whose_folder_is_gone_is_no_report_and_is_rebuilt(fresh, config):
    from pipeline.layout import DataDir
    from pipeline.reports import build_report, latest_report_dir
    from pipeline.runner import latest_report

    root, _ = fresh
    first = build_report(root, config)
    shutil.rmtree(first["report_dir"])  # latest and LATEST still name it
    assert (root / "reports" / "latest").is_symlink()
    assert latest_report(DataDir(root)) is None and latest_report_dir(root) is None
    again = build_report(root, config)  # same inputs and parameters: rebuilt, not "unchanged"
    assert again["changed"] is True and Path(again["report_dir"]).is_dir()
    assert latest_report(DataDir(root)) == Path(again["report_dir"]).resolve()
