"""FAERS quarter labels (``2024Q3``) and ranges (``2023Q1:2024Q4``, ``2024Q3``, ``2023Q1,2024Q2``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

from pipeline.errors import PipelineError

_QUARTER = re.compile(r"^\s*(\d{4})\s*[qQ]\s*([1-4])\s*$")


@total_ordering
@dataclass(frozen=True)
class Quarter:
    year: int
    q: int

    @classmethod
    def parse(cls, text: str) -> "Quarter":
        m = _QUARTER.match(str(text))
        if not m:
            raise PipelineError(f"not a quarter: {text!r} (expected e.g. 2024Q3)")
        return cls(int(m.group(1)), int(m.group(2)))

    @classmethod
    def from_yy(cls, yy: str, q: str) -> "Quarter":
        """Quarter from the two-digit year in FDA file names (``DEMO04Q1`` -> 2004Q1)."""
        return cls(2000 + int(yy), int(q))

    def __str__(self) -> str:
        return f"{self.year}Q{self.q}"

    def __lt__(self, other: "Quarter") -> bool:
        return (self.year, self.q) < (other.year, other.q)

    @property
    def index(self) -> int:
        return self.year * 4 + self.q - 1

    def next(self) -> "Quarter":
        return Quarter(self.year + (self.q == 4), self.q % 4 + 1)

    @property
    def yyqq(self) -> str:
        """``24Q3``: the form used inside FDA file names."""
        return f"{self.year % 100:02d}Q{self.q}"

    @property
    def era(self) -> str:
        """Schema era: ``laers`` (2004Q1-2012Q3), ``faers_a`` (2012Q4-2014Q2), ``faers_b`` (2014Q3 on)."""
        if self < Quarter(2012, 4):
            return "laers"
        if self < Quarter(2014, 3):
            return "faers_a"
        return "faers_b"


def quarter_span(first: Quarter, last: Quarter) -> list[Quarter]:
    if last < first:
        raise PipelineError(f"empty quarter range {first}:{last} (the end is before the start)")
    out, q = [], first
    while q <= last:
        out.append(q)
        q = q.next()
    return out


def parse_range(text: str | None) -> list[Quarter] | None:
    """Parse a RANGE argument; ``None`` or empty means "all available"."""
    if text is None or not str(text).strip():
        return None
    quarters: set[Quarter] = set()
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        if ":" in part:
            lo, hi = part.split(":", 1)
            quarters.update(quarter_span(Quarter.parse(lo), Quarter.parse(hi)))
        else:
            quarters.add(Quarter.parse(part))
    if not quarters:
        raise PipelineError(f"no quarters in range {text!r}")
    return sorted(quarters)
