"""One vocabulary (pipeline/vocabulary.py): the DAGs' literal copies, the CLI, the config checks, the GX suites and
the statistics engine all agree with it, and the modules that used to repeat it import it instead."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from pipeline import vocabulary as V

ROOT = Path(__file__).resolve().parents[1]


class _Eval(ast.NodeVisitor):
    """Evaluates the literal parts of a DAG file: module-level NAME = literal, lists, starred lists, constants."""

    def __init__(self, *trees: ast.Module):
        self.names: dict[str, object] = {}
        for node in (n for tree in trees for n in tree.body):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                try:
                    self.names[node.targets[0].id] = self.value(node.value)
                except ValueError:
                    pass

    def value(self, node):
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name) and node.id in self.names:
            return self.names[node.id]
        if isinstance(node, (ast.List, ast.Tuple)):
            out = []
            for elt in node.elts:
                if isinstance(elt, ast.Starred):
                    out.extend(self.value(elt.value))
                else:
                    out.append(self.value(elt))
            return out
        raise ValueError(ast.dump(node))


COMMON = ROOT / "dags" / "include" / "faers_common.py"


def dag_param_enums(path: Path, common: Path = COMMON) -> dict[str, list]:
    """Param name -> the enum it allows (for list params: the item enum), read from the @dag(params=...) dict;
    names are looked up in the DAG file and in the shared ``dags/include`` module it imports them from."""
    tree = ast.parse(path.read_text())
    ev = _Eval(ast.parse(common.read_text()), tree)
    params = None
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "params" and isinstance(node.value, ast.Dict):
            params = node.value
    assert params is not None, f"{path.name}: no @dag(params={{...}})"
    out = {}
    for key, call in zip(params.keys, params.values):
        assert isinstance(call, ast.Call), ast.dump(call)
        fn = call.func.id if isinstance(call.func, ast.Name) else ""
        enum = None
        if fn in ("list_param", "_list_param") and call.args and not (isinstance(call.args[0], ast.Constant)
                                                      and call.args[0].value is None):
            enum = ev.value(call.args[0])
        for kw in call.keywords:
            if kw.arg == "enum":
                enum = ev.value(kw.value)
        out[ev.value(key)] = enum
    return out


def test_signals_dag_param_enums_equal_the_vocabulary():
    enums = dag_param_enums(ROOT / "dags" / "ketamine_signals.py")
    assert enums["substances"] == list(V.FOCUS_SUBSTANCES)
    assert enums["roles"] == list(V.ROLE_CODES)
    assert enums["mgps_likelihood"] == [None, *V.MGPS_LIKELIHOODS]


def test_the_dag_reader_sees_a_drifted_enum(tmp_path):
    """The check above can fail: a DAG with one likelihood missing reads differently."""
    text = COMMON.read_text()
    drifted = text.replace('MGPS_LIKELIHOODS = ["openebgm", "conditional", "zero-inclusive"]',
                           'MGPS_LIKELIHOODS = ["openebgm", "conditional"]')
    assert drifted != text
    p = tmp_path / "common.py"
    p.write_text(drifted)
    assert dag_param_enums(ROOT / "dags" / "ketamine_signals.py", p)["mgps_likelihood"] != [None, *V.MGPS_LIKELIHOODS]


@pytest.mark.parametrize("dag", ["faers_ingest.py", "ketamine_signals.py", "include/faers_common.py"])
def test_dags_import_no_pipeline_at_parse_time_and_no_fda_url(dag):
    tree = ast.parse((ROOT / "dags" / dag).read_text())
    for node in tree.body:  # module level only; imports inside tasks are fine
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            assert not any(n == "pipeline" or n.startswith("pipeline.") for n in names), dag
    assert "fis.fda.gov" not in (ROOT / "dags" / dag).read_text()


def test_ingest_dag_takes_the_fda_page_from_the_vocabulary():
    assert "from pipeline.vocabulary import FDA_QUARTERLY_PAGE" in COMMON.read_text()


@pytest.mark.parametrize("module", ["pipeline/settings.py", "pipeline/reports/build.py", "pipeline/curate/run.py",
                                   "pipeline/cli.py", "pipeline/reports/command.py", "pipeline/stats/command.py",
                                   "pipeline/stats/mgps.py"])
def test_modules_import_instead_of_repeating(module):
    text = (ROOT / module).read_text()
    for literal in ('"ketamine_family"', '("ketamine", "esketamine"', '("PS", "SS", "C", "I")',
                    '"openebgm", "conditional", "zero-inclusive"', "fis.fda.gov"):
        assert literal not in text, f"{module} repeats {literal}"
    assert "pipeline.vocabulary import" in text


def test_reexports_are_the_vocabulary():
    from pipeline import cli, settings
    from pipeline.reports import build
    from pipeline.stats import LIKELIHOODS

    assert cli.FDA_QUARTERLY_PAGE is V.FDA_QUARTERLY_PAGE
    assert cli.FDA_QUARTERLY_PAGE.startswith("https://") and cli.FDA_QUARTERLY_PAGE.endswith(".html")
    assert settings.SUBSTANCES is V.SUBSTANCES and settings.ROLE_CODES is V.ROLE_CODES
    assert settings.MGPS_LIKELIHOODS is V.MGPS_LIKELIHOODS
    assert build.FAMILY == V.FAMILY and build.SUBSTANCES is V.SUBSTANCES
    assert tuple(LIKELIHOODS) == V.MGPS_LIKELIHOODS  # the engine keeps its own copy: same names, same order


def test_vocabulary_shape():
    assert V.FOCUS_SUBSTANCES == V.SUBSTANCES + (V.FAMILY,)
    assert V.FAMILY not in V.SUBSTANCES and len(set(V.SUBSTANCES)) == len(V.SUBSTANCES)
    assert V.ROLE_CODES == ("PS", "SS", "C", "I") and set(V.ROLES) == set(V.ROLE_CODES)
    assert V.MGPS_LIKELIHOODS[0] == "openebgm"


def test_gx_suites_use_the_vocabulary():
    suite = json.loads((ROOT / "expectations" / "curated_report_ingredients.json").read_text())
    sets = {e["kwargs"]["column"]: e["kwargs"]["value_set"] for e in suite["expectations"]
            if e["type"] == "expect_column_values_to_be_in_set"}
    assert sets["substance"] == list(V.SUBSTANCES)
    assert sets["role_cod"] == list(V.ROLE_CODES)


def test_cli_choices_come_from_the_vocabulary():
    import argparse

    from pipeline.reports.command import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    with pytest.raises(SystemExit):
        parser.parse_args(["signals", "--mgps-likelihood", "gps"])
    for lik in V.MGPS_LIKELIHOODS:
        assert parser.parse_args(["signals", "--mgps-likelihood", lik]).mgps_likelihood == lik


def test_config_rejects_what_the_vocabulary_does_not_know(tmp_path):
    from pipeline.errors import PipelineError
    from pipeline.settings import DEFAULT_CONFIG_PATH, load_config

    text = DEFAULT_CONFIG_PATH.read_text()
    for old, new in (('SPRAVATO = "esketamine"', 'SPRAVATO = "ketamine_family"'),
                     ('roles = ["PS", "SS"]', 'roles = ["PS", "SX"]'),
                     ('mgps_likelihood = "openebgm"', 'mgps_likelihood = "poisson"')):
        p = tmp_path / "c.toml"
        p.write_text(text.replace(old, new))
        with pytest.raises(PipelineError):
            load_config(p)
