"""The signal rules: one model, used by the statistics engine, the report and the output checks.

Standard library only, so the configuration loader builds it without importing the numerical stack. The config
file keeps its own key names (``[thresholds] evans_min_a`` ...); :attr:`Thresholds.CONFIG_KEYS` is the one place
they are translated.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

from pipeline.errors import PipelineError


@dataclass(frozen=True)
class Thresholds:
    """Signal rules. A NaN statistic never raises a flag.

    * ``signal_prr`` (Evans et al. 2001): a ≥ ``prr_min_a`` and PRR ≥ ``prr_min`` and Yates χ² ≥ ``chi2_yates_min``
    * ``signal_ror`` (van Puijenbroek et al. 2002): a ≥ ``ror_min_a`` and ror_lo > ``ror_lo_min``
    * ``signal_ic`` (Norén et al. 2013): ic025 > ``ic025_min``
    * ``signal_ebgm`` (Szarfman et al. 2002): eb05 ≥ ``eb05_min`` and a ≥ ``ebgm_min_a``

    The defaults are the published rules; ``ebgm_min_a`` is 0 here (the rule as published) and 3 in the shipped
    configuration (a single report never makes a signal of the report).
    """

    prr_min_a: int = 3
    prr_min: float = 2.0
    chi2_yates_min: float = 4.0
    ror_min_a: int = 3
    ror_lo_min: float = 1.0
    ic025_min: float = 0.0
    eb05_min: float = 2.0
    ebgm_min_a: int = 0

    #: configuration key -> field
    CONFIG_KEYS: ClassVar[dict[str, str]] = {
        "evans_min_a": "prr_min_a", "evans_min_prr": "prr_min", "evans_min_chi2_yates": "chi2_yates_min",
        "ror_min_a": "ror_min_a", "ror_lo_gt": "ror_lo_min", "ic025_gt": "ic025_min", "eb05_ge": "eb05_min",
        "ebgm_min_a": "ebgm_min_a",
    }

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any] | None) -> "Thresholds":
        """From field names (``prr_min_a`` ...); missing fields keep their defaults, unknown names raise."""
        if not m:
            return cls()
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(m) - names)
        if unknown:
            raise PipelineError(f"unknown signal threshold(s): {', '.join(unknown)}")
        return cls(**{k: cls._typed(k, v) for k, v in m.items()})

    @classmethod
    def from_config(cls, table: Mapping[str, Any]) -> "Thresholds":
        """From a config ``[thresholds]`` table (its key names; keys that are no signal rule are ignored)."""
        return cls.from_mapping({f: table[k] for k, f in cls.CONFIG_KEYS.items() if table.get(k) is not None})

    def replace(self, m: Mapping[str, Any] | None) -> "Thresholds":
        """A copy with the fields named in ``m`` changed (unknown names raise)."""
        if not m:
            return self
        self.from_mapping(m)
        return dataclasses.replace(self, **{k: self._typed(k, v) for k, v in m.items()})

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def _typed(cls, name: str, value: Any) -> Any:
        return int(value) if name.endswith("_a") else float(value)
