"""One ranking of PTs for the page and the terminal: "top PTs" of a substance."""

from __future__ import annotations

import math

import pandas as pd


def top_pts(signals: pd.DataFrame, substance: str, n: int, min_a: int) -> pd.DataFrame:
    """The ``n`` PT rows of ``substance`` with ``a >= min_a``, ranked by the ROR lower bound.

    Ties (and rows whose bound is NaN, ranked last) are broken by the IC lower bound, then by PT name, so the
    order is the same on every run and in every view.
    """
    pts = signals[(signals["substance"].astype(str) == substance) & signals["pt"].notna()
                  & (signals["a"] >= min_a)].copy()
    pts["_lo"] = pts["ror_lo"].astype(float).fillna(-math.inf)
    pts["_ic"] = pts["ic025"].astype(float).fillna(-math.inf)
    pts["_pt"] = pts["pt"].astype(str)
    ranked = pts.sort_values(["_lo", "_ic", "_pt"], ascending=[False, False, True], kind="mergesort")
    return ranked.head(int(n)).drop(columns=["_lo", "_ic", "_pt"])
