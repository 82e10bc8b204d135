"""Configuration: one TOML file holding the case definition, substance matching, roles, PT groups, duplicate
policy, thresholds and statistics options (``pipeline/default_config.toml`` is the shipped default).

The file is data, validated on load against :data:`SPEC`: every key is required, unknown keys, wrong types,
unknown role codes, empty PT groups and a look-alike trap that reads as a family substance each raise a
:class:`~pipeline.errors.PipelineError` naming the key. ``Config.sha256`` is the sha256 of the file's bytes and
goes into every curated table and manifest; ``Config.as_dict()`` is the parsed file (for manifests).
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.duck import Resources
from pipeline.errors import PipelineError
from pipeline.stats.rules import Thresholds
from pipeline.vocabulary import FAMILY, MGPS_LIKELIHOODS, ROLE_CODES, SUBSTANCES

DEFAULT_CONFIG_PATH = Path(__file__).with_name("default_config.toml")
#: curated ``reports`` columns that may stratify MGPS's expected count (``[mgps] strata``)
MGPS_STRATA = ("sex", "age_band", "receipt_year", "reporter_country", "occp_cod")


# Type tokens of the spec: "str", "int", "float" (int accepted), "bool", "list[str]", "list[float]",
# "map[str]" (table of free keys -> str), or a nested dict (fixed keys). "groups" = table of PT groups.
_GROUP_SPEC = {"source": "str", "pts": "list[str]"}

SPEC: dict[str, Any] = {
    "case_definition": {"version": "str", "description": "str"},
    "substances": {"traps": "list[str]", "ingredients": "map[str]", "brands": "map[str]"},
    "drugs": {"salt_suffixes": "list[str]", "top_unmapped": "int", "aliases": "map[str]"},
    "exposure": {"roles": "list[str]"},
    "pt_groups": "groups",
    "duplicates": {"exclude_flagged_duplicates": "bool", "aeolus_key": "bool", "mfr_num": "bool",
                   "mfr_age_tolerance_years": "float", "mfr_max_group_size": "int", "relaxed": "bool",
                   "relaxed_age_tolerance_years": "float", "relaxed_min_jaccard": "float",
                   "relaxed_min_suspects": "int",
                   "linkage": {"enabled": "bool", "threshold": "float", "min_reports": "int",
                               "exclude_flagged": "bool", "max_block_size": "int", "u_sample_reports": "int",
                               "em_sample_reports": "int",
                               "em_max_iterations": "int",
                               "review_file": "str", "review_margin_bits": "float", "review_max_pairs": "int"}},
    "thresholds": {"evans_min_a": "int", "evans_min_prr": "float", "evans_min_chi2_yates": "float",
                   "ror_min_a": "int", "ror_lo_gt": "float", "ic025_gt": "float", "eb05_ge": "float",
                   "ebgm_min_a": "int", "quarantine_rate_max": "float", "unmapped_share_max": "float"},
    "statistics": {"mgps_likelihood": "str", "confidence_level": "float"},
    "mgps": {"strata": "list[str]"},
    "curation": {"null_key_tolerance": "float", "age_band_edges": "list[float]", "max_age_years": "float"},
    "resources": {"memory_limit": "str", "curate_memory_limit": "str", "threads": "int", "temp_directory": "str"},
    # {"*": spec}: a table of free keys, each value checked against spec
    "analyses": {"hcp_occupations": "list[str]", "us_countries": "list[str]", "unknown_countries": "list[str]",
                 "top_indications": "int", "top_categories": "int", "onset_min_reports": "int",
                 "depression_cohort_pts": "list[str]", "use_categories": {"*": "list[str]"},
                 "comparators": {"*": {"substance": "str", "comparator": "list[str]", "source": "str"}}},
}


@dataclass(frozen=True)
class PtGroup:
    name: str
    pts: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class LinkagePolicy:
    """``[duplicates.linkage]``: probabilistic record linkage (:mod:`pipeline.curate.linkage`)."""

    enabled: bool
    threshold: float
    min_reports: int
    exclude_flagged: bool
    max_block_size: int
    u_sample_reports: int
    em_sample_reports: int
    em_max_iterations: int
    review_file: str
    review_margin_bits: float
    review_max_pairs: int


@dataclass(frozen=True)
class DuplicatePolicy:
    exclude_flagged_duplicates: bool
    aeolus_key: bool
    mfr_num: bool
    mfr_age_tolerance_years: float
    mfr_max_group_size: int
    relaxed: bool
    relaxed_age_tolerance_years: float
    relaxed_min_jaccard: float
    relaxed_min_suspects: int
    linkage: LinkagePolicy


@dataclass(frozen=True)
class QualityGates:
    """The data-quality limits of ``[thresholds]`` (the rest of that table are the signal rules)."""

    # quarantined share of a raw file's lines that stops ingest; `ingest` takes no config, so its validation still
    # uses its built-in 0.001 (the shipped value): changing this key does not change ingest yet
    quarantine_rate_max: float
    unmapped_share_max: float   # share of unmapped drug rows above which curation warns


@dataclass(frozen=True)
class Comparison:
    """A configured comparison: ``substance`` against the reports exposed to any ``comparator`` ingredient."""

    name: str
    substance: str
    comparator: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class Analyses:
    """``[analyses]``: the definitions of the report's descriptive, sensitivity and comparator tables."""

    hcp_occupations: tuple[str, ...]
    us_countries: tuple[str, ...]
    unknown_countries: tuple[str, ...]
    top_indications: int
    top_categories: int
    onset_min_reports: int
    depression_cohort_pts: tuple[str, ...]
    use_categories: tuple[tuple[str, tuple[str, ...]], ...]
    comparators: tuple[Comparison, ...]


@dataclass(frozen=True)
class Config:
    """The validated configuration. Mappings are stored as sorted tuples of pairs so the object is hashable."""

    path: Path
    sha256: str
    case_definition_version: str
    case_definition_description: str
    traps: tuple[str, ...]
    ingredients: tuple[tuple[str, str], ...]       # substance -> canonical ingredient name
    brands: tuple[tuple[str, str], ...]            # brand -> substance
    salt_suffixes: tuple[str, ...]
    top_unmapped: int
    aliases: tuple[tuple[str, str], ...]           # normalised name -> ingredient(s), '\'-separated
    exposure_roles: tuple[str, ...]
    pt_groups: tuple[PtGroup, ...]
    duplicates: DuplicatePolicy
    thresholds: Thresholds                         # signal rules (pipeline.stats.rules)
    gates: QualityGates
    mgps_likelihood: str
    confidence_level: float
    null_key_tolerance: float
    age_band_edges: tuple[float, ...]
    max_age_years: float
    resources: Resources
    analyses: Analyses
    mgps_strata: tuple[str, ...] = ()  # curated report columns whose combinations stratify MGPS's E
    _raw: dict = field(default_factory=dict, repr=False, compare=False, hash=False)

    @property
    def substances(self) -> tuple[str, ...]:
        return SUBSTANCES

    def pt_group(self, name: str) -> PtGroup:
        for g in self.pt_groups:
            if g.name == name:
                return g
        raise KeyError(name)

    def as_dict(self) -> dict:
        """The parsed file plus its path and sha256 (JSON-serialisable, for manifests)."""
        import copy

        return {"path": str(self.path), "sha256": self.sha256, **copy.deepcopy(self._raw)}


def _err(path: Path, key: str, msg: str) -> PipelineError:
    return PipelineError(f"config {path}: key '{key}' {msg}")


def _check_type(path: Path, key: str, value: Any, token: str) -> None:
    def is_num(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    ok = {
        "str": lambda v: isinstance(v, str),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": is_num,
        "bool": lambda v: isinstance(v, bool),
        "list[str]": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
        "list[float]": lambda v: isinstance(v, list) and all(is_num(x) for x in v),
        "map[str]": lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
    }[token](value)
    if not ok:
        names = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
                 "list[str]": "a list of strings", "list[float]": "a list of numbers",
                 "map[str]": "a table of strings"}
        raise _err(path, key, f"must be {names[token]}, got {value!r}")


def _validate(path: Path, data: dict, spec: dict, prefix: str = "") -> None:
    for key in data:
        if key not in spec:
            raise _err(path, prefix + key, "is unknown (allowed: " + ", ".join(sorted(spec)) + ")")
    for key, token in spec.items():
        full = prefix + key
        if key not in data:
            raise _err(path, full, "is missing")
        value = data[key]
        if isinstance(token, dict) and "*" in token:
            if not isinstance(value, dict):
                raise _err(path, full, f"must be a table, got {value!r}")
            for k, v in value.items():
                if isinstance(token["*"], dict):
                    if not isinstance(v, dict):
                        raise _err(path, f"{full}.{k}", f"must be a table, got {v!r}")
                    _validate(path, v, token["*"], f"{full}.{k}.")
                else:
                    _check_type(path, f"{full}.{k}", v, token["*"])
        elif isinstance(token, dict):
            if not isinstance(value, dict):
                raise _err(path, full, f"must be a table, got {value!r}")
            _validate(path, value, token, full + ".")
        elif token == "groups":
            if not isinstance(value, dict) or not value:
                raise _err(path, full, "must be a non-empty table of PT groups")
            for name, group in value.items():
                if not isinstance(group, dict):
                    raise _err(path, f"{full}.{name}", "must be a table with 'source' and 'pts'")
                _validate(path, group, _GROUP_SPEC, f"{full}.{name}.")
                if not [p for p in group["pts"] if p.strip()]:
                    raise _err(path, f"{full}.{name}.pts", "is empty (a PT group needs at least one PT)")
        else:
            _check_type(path, full, value, token)


def _semantic_checks(path: Path, d: dict) -> None:
    s = d["substances"]
    for k, v in s["brands"].items():
        if v not in SUBSTANCES:
            raise _err(path, f"substances.brands.{k}", f"names unknown substance {v!r} "
                                                       f"(allowed: {', '.join(SUBSTANCES)})")
    from pipeline.curate.substance_names import NameReader

    reader = NameReader(s["brands"])
    for trap in s["traps"]:
        if reader.substances(trap):
            raise _err(path, "substances.traps", f"look-alike {trap!r} reads as {'+'.join(reader.substances(trap))}")
    for sub in SUBSTANCES:
        if sub not in s["ingredients"]:
            raise _err(path, f"substances.ingredients.{sub}", "is missing")
    for k in s["ingredients"]:
        if k not in SUBSTANCES:
            raise _err(path, f"substances.ingredients.{k}", "is not a ketamine-family substance")
    roles = d["exposure"]["roles"]
    if not roles:
        raise _err(path, "exposure.roles", "is empty")
    for r in roles:
        if r not in ROLE_CODES:
            raise _err(path, "exposure.roles", f"has unknown role code {r!r} (allowed: {', '.join(ROLE_CODES)})")
    st = d["statistics"]
    if st["mgps_likelihood"] not in MGPS_LIKELIHOODS:
        raise _err(path, "statistics.mgps_likelihood", f"must be one of {', '.join(MGPS_LIKELIHOODS)}")
    if not 0 < st["confidence_level"] < 1:
        raise _err(path, "statistics.confidence_level", "must be between 0 and 1")
    strata = d["mgps"]["strata"]
    for col in strata:
        if col not in MGPS_STRATA:
            raise _err(path, "mgps.strata", f"has unknown column {col!r} (allowed: {', '.join(MGPS_STRATA)})")
    if len(set(strata)) != len(strata):
        raise _err(path, "mgps.strata", "names a column twice")
    c = d["curation"]
    if not 0 <= c["null_key_tolerance"] < 1:
        raise _err(path, "curation.null_key_tolerance", "must be in [0, 1)")
    edges = c["age_band_edges"]
    if sorted(edges) != edges or len(set(edges)) != len(edges) or any(e <= 0 for e in edges):
        raise _err(path, "curation.age_band_edges", "must be strictly increasing positive numbers")
    r = d["resources"]
    if r["threads"] < 1:
        raise _err(path, "resources.threads", "must be >= 1")
    for key in ("memory_limit", "curate_memory_limit"):
        if key == "curate_memory_limit" and not r[key].strip():
            continue  # empty: curation takes memory_limit
        if not re.fullmatch(r"\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KIB|MIB|GIB|TIB)\s*", r[key].upper()):
            raise _err(path, f"resources.{key}", f"must be a size such as \"4GB\" or \"512MB\", got {r[key]!r}")
    if not r["temp_directory"].strip():
        raise _err(path, "resources.temp_directory", "is empty")
    dup = d["duplicates"]
    if not 0 < dup["relaxed_min_jaccard"] <= 1:
        raise _err(path, "duplicates.relaxed_min_jaccard", "must be in (0, 1]")
    if dup["mfr_max_group_size"] < 2:
        raise _err(path, "duplicates.mfr_max_group_size", "must be >= 2")
    lk = dup["linkage"]
    if not 0 < lk["threshold"] < 1:
        raise _err(path, "duplicates.linkage.threshold", "must be between 0 and 1")
    for key, low in (("min_reports", 0), ("max_block_size", 2), ("u_sample_reports", 2), ("em_sample_reports", 1),
                     ("em_max_iterations", 1), ("review_max_pairs", 0)):
        if lk[key] < low:
            raise _err(path, f"duplicates.linkage.{key}", f"must be >= {low}")
    if lk["review_margin_bits"] < 0:
        raise _err(path, "duplicates.linkage.review_margin_bits", "must be >= 0")
    if d["drugs"]["top_unmapped"] < 0:
        raise _err(path, "drugs.top_unmapped", "must be >= 0")
    an = d["analyses"]
    for key in ("top_indications", "top_categories", "onset_min_reports"):
        if an[key] < 1:
            raise _err(path, f"analyses.{key}", "must be >= 1")
    for name, comp in an["comparators"].items():
        if comp["substance"] not in (*SUBSTANCES, FAMILY):
            raise _err(path, f"analyses.comparators.{name}.substance",
                       f"names unknown substance {comp['substance']!r} (allowed: {', '.join((*SUBSTANCES, FAMILY))})")
        if not [c for c in comp["comparator"] if c.strip()]:
            raise _err(path, f"analyses.comparators.{name}.comparator", "is empty")
    for name, pts in an["use_categories"].items():
        if not [p for p in pts if p.strip()]:
            raise _err(path, f"analyses.use_categories.{name}", "is empty")


def load_config(path: str | Path | None = None) -> Config:
    """Read and validate a TOML config (``None`` = ``$FAERS_CONFIG`` if set, else the shipped default).

    The CLI and the DAGs read the same variable, so one setting picks the configuration for both.
    """
    if path is None:
        path = os.environ.get("FAERS_CONFIG") or None
    p = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise PipelineError(f"config {p}: cannot read ({exc.strerror or exc})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PipelineError(f"config {p}: not valid TOML ({exc})") from None
    _validate(p, data, SPEC)
    _semantic_checks(p, data)

    s, dr, cu = data["substances"], data["drugs"], data["curation"]
    norm = lambda x: " ".join(x.upper().split())  # noqa: E731 - keys compared on normalised text
    return Config(
        path=p.resolve(),
        sha256=hashlib.sha256(raw).hexdigest(),
        case_definition_version=data["case_definition"]["version"],
        case_definition_description=data["case_definition"]["description"],
        traps=tuple(s["traps"]),
        ingredients=tuple(sorted(s["ingredients"].items())),
        brands=tuple(sorted((norm(k), v) for k, v in s["brands"].items())),
        salt_suffixes=tuple(norm(x) for x in dr["salt_suffixes"]),
        top_unmapped=dr["top_unmapped"],
        aliases=tuple(sorted((norm(k), norm(v)) for k, v in dr["aliases"].items())),
        exposure_roles=tuple(data["exposure"]["roles"]),
        pt_groups=tuple(PtGroup(name, tuple(" ".join(p.split()) for p in g["pts"] if p.strip()), g["source"])
                        for name, g in data["pt_groups"].items()),
        duplicates=DuplicatePolicy(
            **{k: (float(v) if isinstance(v, int) and SPEC["duplicates"][k] == "float" else v)
               for k, v in data["duplicates"].items() if k != "linkage"},
            linkage=LinkagePolicy(**{k: (float(v) if isinstance(v, int) and SPEC["duplicates"]["linkage"][k] == "float"
                                         else v) for k, v in data["duplicates"]["linkage"].items()})),
        thresholds=Thresholds.from_config(data["thresholds"]),
        gates=QualityGates(**{k: float(data["thresholds"][k]) for k in ("quarantine_rate_max", "unmapped_share_max")}),
        mgps_likelihood=data["statistics"]["mgps_likelihood"],
        confidence_level=float(data["statistics"]["confidence_level"]),
        null_key_tolerance=float(cu["null_key_tolerance"]),
        age_band_edges=tuple(float(e) for e in cu["age_band_edges"]),
        max_age_years=float(cu["max_age_years"]),
        resources=Resources(memory_limit=data["resources"]["memory_limit"].strip(),
                            curate_memory_limit=data["resources"]["curate_memory_limit"].strip(),
                            threads=data["resources"]["threads"],
                            temp_directory=data["resources"]["temp_directory"]),
        analyses=_analyses(data["analyses"]),
        mgps_strata=tuple(data["mgps"]["strata"]),
        _raw=data,
    )


def _analyses(an: dict) -> Analyses:
    norm = lambda x: " ".join(x.upper().split())  # noqa: E731 - ingredient names as report_ingredients writes them
    return Analyses(
        hcp_occupations=tuple(x.strip().upper() for x in an["hcp_occupations"]),
        us_countries=tuple(x.strip().upper() for x in an["us_countries"]),
        unknown_countries=tuple(x.strip().upper() for x in an["unknown_countries"]),
        top_indications=int(an["top_indications"]), top_categories=int(an["top_categories"]),
        onset_min_reports=int(an["onset_min_reports"]),
        depression_cohort_pts=tuple(" ".join(p.split()) for p in an["depression_cohort_pts"] if p.strip()),
        use_categories=tuple((k, tuple(" ".join(p.split()) for p in v if p.strip()))
                             for k, v in an["use_categories"].items()),
        comparators=tuple(Comparison(k, v["substance"], tuple(norm(c) for c in v["comparator"] if c.strip()),
                                     v["source"]) for k, v in an["comparators"].items()),
    )
