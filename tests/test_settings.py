"""Configuration loading and validation (pipeline/settings.py)."""

from __future__ import annotations

import hashlib
import json

import pytest

from pipeline.errors import PipelineError
from pipeline.settings import DEFAULT_CONFIG_PATH, Config, load_config


def _write(tmp_path, replace: dict[str, str] | None = None, append: str = "") -> str:
    text = DEFAULT_CONFIG_PATH.read_text()
    for old, new in (replace or {}).items():
        assert old in text, old
        text = text.replace(old, new, 1)
    p = tmp_path / "c.toml"
    p.write_text(text + append)
    return p


def test_default_config_loads():
    c = load_config()
    assert isinstance(c, Config)
    assert c.sha256 == hashlib.sha256(DEFAULT_CONFIG_PATH.read_bytes()).hexdigest()
    assert c.exposure_roles == ("PS", "SS")
    assert c.duplicates.exclude_flagged_duplicates is True
    assert {"dissociation", "tachycardia", "hypertension"} <= {g.name for g in c.pt_groups}
    assert all(g.source and g.pts for g in c.pt_groups)
    t = c.thresholds
    assert (t.prr_min_a, t.prr_min, t.chi2_yates_min) == (3, 2.0, 4.0)
    assert (t.ror_min_a, t.ror_lo_min, t.ic025_min, t.eb05_min, t.ebgm_min_a) == (3, 1.0, 0.0, 2.0, 3)
    assert (c.gates.quarantine_rate_max, c.gates.unmapped_share_max) == (0.001, 0.05)
    assert c.mgps_likelihood == "openebgm" and c.confidence_level == 0.95
    assert dict(c.brands)["KETANEST S"] == "esketamine" and dict(c.brands)["KETALAR"] == "ketamine"
    assert c.case_definition_version == "ketamine-family-v2"


def test_as_dict_is_json_and_carries_sha():
    c = load_config()
    d = c.as_dict()
    json.dumps(d)
    assert d["sha256"] == c.sha256 and d["exposure"]["roles"] == ["PS", "SS"]
    d["exposure"]["roles"].append("C")  # a copy: the config stays frozen
    assert c.as_dict()["exposure"]["roles"] == ["PS", "SS"]


def test_config_is_frozen():
    c = load_config()
    with pytest.raises(Exception):
        c.exposure_roles = ("PS",)


def test_sha_changes_with_bytes(tmp_path):
    p = _write(tmp_path, append="\n# a comment\n")
    assert load_config(p).sha256 != load_config().sha256


@pytest.mark.parametrize("replace, append, key", [
    ({}, "\n[extra]\nx = 1\n", "'extra'"),
    ({"exclude_flagged_duplicates = true": "exclude_flagged_duplicates = true\nexclude_typo = true"}, "",
     "'duplicates.exclude_typo'"),
    ({"evans_min_a = 3": "evans_min_a = \"three\""}, "", "'thresholds.evans_min_a'"),
    ({"exclude_flagged_duplicates = true": "exclude_flagged_duplicates = 1"}, "",
     "'duplicates.exclude_flagged_duplicates'"),
    ({'roles = ["PS", "SS"]': 'roles = ["PS", "XX"]'}, "", "'exposure.roles'"),
    ({'roles = ["PS", "SS"]': 'roles = []'}, "", "'exposure.roles'"),
    ({'pts = ["Tachycardia", "Heart rate increased", "Sinus tachycardia"]': 'pts = []'}, "",
     "'pt_groups.tachycardia.pts'"),
    ({'mgps_likelihood = "openebgm"': 'mgps_likelihood = "gps"'}, "", "'statistics.mgps_likelihood'"),
    ({"confidence_level = 0.95": "confidence_level = 95"}, "", "'statistics.confidence_level'"),
    ({"null_key_tolerance = 0.001\n": ""}, "", "'curation.null_key_tolerance'"),
    ({'SPRAVATO = "esketamine"': 'SPRAVATO = "esketamin"'}, "", "'substances.brands.SPRAVATO'"),
    ({'traps = ["KETOROLAC"': 'traps = ["KETAMINE HCL", "KETOROLAC"'}, "", "'substances.traps'"),
    ({'traps = ["KETOROLAC"': 'traps = ["SPRAVATO 28 MG", "KETOROLAC"'}, "", "'substances.traps'"),
    ({"[substances]\n": "[substances]\nregex = 'KETAMIN'\n"}, "", "'substances.regex'"),
    ({"age_band_edges = [18, 45, 65, 75]": "age_band_edges = [45, 18]"}, "", "'curation.age_band_edges'"),
])
def test_bad_keys_are_named(tmp_path, replace, append, key):
    p = _write(tmp_path, replace, append)
    with pytest.raises(PipelineError) as exc:
        load_config(p)
    assert key in str(exc.value) and "\n" not in str(exc.value)


def test_not_toml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[[[")
    with pytest.raises(PipelineError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(PipelineError, match="cannot read"):
        load_config(tmp_path / "nope.toml")


def test_empty_group_table_rejected(tmp_path):
    p = _write(tmp_path, append="\n[pt_groups.empty]\nsource = \"x\"\npts = [\" \"]\n")
    with pytest.raises(PipelineError, match="pt_groups.empty.pts"):
        load_config(p)
