"""One rule for turning pipeline values into strict JSON (manifests, sidecars, the Airflow page's data).

JSON has no NaN or infinity, and ``json.dumps`` writes them as bare tokens other readers reject. A missing
statistic (NaN) becomes ``null``; an infinite one stays visible as the string ``"inf"`` or ``"-inf"`` (an
unbounded ROR upper limit is information, not a gap). NumPy scalars become Python numbers, dates ISO strings,
paths and anything else their ``str``. Standard library only, so DAG-side code may use it.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any


def jsonable(obj: Any) -> Any:
    """Return a copy of ``obj`` that ``json.dumps(..., allow_nan=False)`` accepts.

    Dict keys become strings; lists, tuples and sets become lists; objects with ``.item()`` (NumPy scalars)
    are unwrapped first.
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in obj]
    if not isinstance(obj, (str, bytes)) and hasattr(obj, "item") and callable(obj.item):
        try:
            obj = obj.item()
        except (TypeError, ValueError):  # a multi-element array: keep its elements
            return [jsonable(v) for v in obj.tolist()]
    if isinstance(obj, float):
        if math.isnan(obj):
            return None
        if math.isinf(obj):
            return "inf" if obj > 0 else "-inf"
        return obj
    if obj is None or isinstance(obj, (str, bool, int)):
        return obj
    if isinstance(obj, (dt.date, dt.datetime)):
        return obj.isoformat()
    return str(obj)  # paths and anything else
