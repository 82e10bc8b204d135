"""Check records, their one-line messages, and the summary every validation writes.

Every check, whether GX ran it or a numpy/pyarrow set operation, becomes one :class:`Check`; :func:`finish`
turns a list of them into the summary JSON and raises :class:`ValidationFailed` on critical failures.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from pipeline.atomic import write_json
from pipeline.errors import PipelineError
from pipeline.jsonsafe import jsonable

# the package's logger, as before the split: the CLI quiets "pipeline.quality" and logs name it
log = logging.getLogger(__package__)

CRITICAL, WARNING = "critical", "warning"


class ValidationFailed(PipelineError):
    """A critical expectation failed. ``str(exc)`` is one line; ``exc.summary`` is the full summary."""

    exit_code = 5

    def __init__(self, message: str, summary: dict | None = None):
        super().__init__(message)
        self.summary = summary or {}


@dataclass
class Check:
    """One expectation or named check on one table, with its outcome and a few offending values."""

    layer: str                      # raw | curated | outputs
    table: str                      # DEMO, _ingest, reports, signals, ...
    scope: str                      # quarter, "curated", run id
    expectation: str                # GX expectation type or a named check
    severity: str
    success: bool
    engine: str = "great_expectations"
    suite: str | None = None
    columns: list[str] = field(default_factory=list)
    kwargs: dict = field(default_factory=dict)
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    element_count: int | None = None
    observed_value: Any = None
    examples: list = field(default_factory=list)
    details: str = ""
    notes: str = ""

    def where(self) -> str:
        return " ".join(x for x in (self.layer, self.table, self.scope) if x)

    def line(self) -> str:
        cols = f"({', '.join(self.columns)})" if self.columns else ""
        status = "failed" if not self.success else "passed"
        return f"{self.where()}: {self.expectation}{cols} {status}: {self.details or _detail(self)}"

    def as_dict(self) -> dict:
        d = asdict(self)
        d["message"] = self.line() if not self.success else None
        return jsonable(d)


def fmt_value(v: Any) -> str:
    """A value as it appears in a check message (strings quoted, floats to 6 digits, ``null``, ``NaN``)."""
    if isinstance(v, (list, tuple)):
        return "(" + ", ".join(fmt_value(x) for x in v) + ")"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}={fmt_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (np.generic,)):
        v = v.item()
    if isinstance(v, float):
        return "NaN" if math.isnan(v) else f"{v:.6g}"
    if v is None:
        return "null"
    if isinstance(v, str):
        return repr(v)
    return str(v)


def fmt_count(v: Any) -> str:
    """A whole number with thousands separators; anything else as :func:`fmt_value`."""
    if isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and math.isfinite(v) and v == int(v):
        return f"{int(v):,}"
    return fmt_value(v)


def _detail(c: Check) -> str:
    if c.unexpected_count is not None:
        pct = f" ({c.unexpected_percent:.3g} %)" if c.unexpected_percent is not None else ""
        mostly = c.kwargs.get("mostly")
        allowed = f", more than mostly={mostly} allows" if mostly is not None and not c.success else ""
        ex = f", e.g. {', '.join(fmt_value(e) for e in c.examples[:5])}" if c.examples else ""
        return f"{c.unexpected_count:,} rows{pct}{allowed}{ex}"
    if c.observed_value is not None:
        return f"observed {fmt_value(c.observed_value)}"
    return "see the validation JSON"


def exception_line(failures: list[Check]) -> str:
    """The one-line message of :class:`ValidationFailed`: the first failure in full, a few more by name."""
    first = failures[0].line()
    if len(failures) > 1:
        rest = "; ".join(f"{c.table} {c.expectation}{'(' + ', '.join(c.columns) + ')' if c.columns else ''}"
                         for c in failures[1:4])
        more = f" and {len(failures) - 4} more" if len(failures) > 4 else ""
        first += f" (+{len(failures) - 1} more critical: {rest}{more})"
    return " ".join(first.split())  # one line, whatever the values contain


def named_check(layer, table, scope, name, severity, ok, *, columns=(), unexpected=None, total=None, examples=(),
                details="", notes="", kwargs=None, observed=None, engine="pyarrow") -> Check:
    """A check computed outside GX (set operations, totals), in the same record as GX's own."""
    c = Check(layer=layer, table=table, scope=scope, expectation=name, severity=severity, success=bool(ok),
              engine=engine, columns=list(columns), kwargs=kwargs or {}, notes=notes, observed_value=observed)
    if unexpected is not None:
        c.unexpected_count = int(unexpected)
        c.element_count = int(total) if total is not None else None
        c.unexpected_percent = (100.0 * unexpected / total) if total else None
        c.examples = list(examples)[:10]
    c.details = details
    return c


def finish(layer: str, scope: str, checks: list[Check], target: Path, *, extra: dict, gxr, timings: dict,
           raise_on_critical: bool, also_write: Iterable[Path] = ()) -> dict:
    """Build the summary of ``checks``, write it to ``target`` (and ``also_write``), log the warnings, raise
    :class:`ValidationFailed` on a critical failure (``raise_on_critical``); ``gxr`` (a
    :class:`~pipeline.quality.gx.GxRun` or ``None``) renders the Data Docs first."""
    t = time.perf_counter()
    docs = None
    if gxr is not None and gxr.docs_dir is not None:
        try:
            docs = gxr.build_docs()
        except Exception as exc:  # Data Docs are a convenience; never fail validation because of them
            log.warning("GX Data Docs not built: %s", exc)
    timings["data_docs"] = round(time.perf_counter() - t, 3)
    # GX findings on a table come before the cross-table consequences they cause (orphans, coverage).
    critical = sorted((c for c in checks if not c.success and c.severity == CRITICAL),
                      key=lambda c: c.engine != "great_expectations")
    warnings = [c for c in checks if not c.success and c.severity != CRITICAL]
    summary = {
        "layer": layer,
        "scope": scope,
        **extra,
        "success": not critical,
        "validated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "statistics": {"checks": len(checks), "passed": sum(c.success for c in checks),
                       "critical_failed": len(critical), "warnings": len(warnings),
                       "gx_expectations": sum(c.engine == "great_expectations" for c in checks),
                       "set_operation_checks": sum(c.engine != "great_expectations" for c in checks)},
        "critical_failures": [c.line() for c in critical],
        "warnings": [c.line() for c in warnings],
        "seconds": timings,
        "data_docs": docs,
        "checks": [c.as_dict() for c in checks],
    }
    for path in (target, *also_write):
        write_json(summary, path)
    for c in warnings:
        log.warning("%s", c.line())
    if critical and raise_on_critical:
        raise ValidationFailed(exception_line(critical), summary)
    return summary
