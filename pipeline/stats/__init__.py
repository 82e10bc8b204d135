"""Disproportionality statistics engine (issue 4).

Public API (docs/CONTRACTS.md, "Statistics")::

    count_pairs(exposures, events, *, n_total=None)            -> pa.Table  (report-level int64 margins)
    disproportionality(counts, *, confidence_level=0.95, thresholds=None, mgps_likelihood="openebgm",
                       mgps_fit=None, haldane=False)            -> (DataFrame, MgpsFit)
    fit_mgps(counts, likelihood="openebgm")                     -> MgpsFit

To score several tables with one prior (the report layer: fit on every ingredient × PT pair, score
substance × PT and substance × PT-group rows), fit once and pass the fit::

    fit = fit_mgps(background_counts)
    rows, _ = disproportionality(substance_counts, mgps_fit=fit)

or call ``fit.posterior(n, expected)`` / :func:`posterior` directly.
"""

from .counting import COUNT_COLUMNS, count_pairs, count_rows, stratified_expected
from .engine import OUTPUT_COLUMNS, Thresholds, disproportionality, validate_counts
from .mgps import LIKELIHOODS, MgpsFit, fit_mgps, posterior

__all__ = [
    "COUNT_COLUMNS", "LIKELIHOODS", "OUTPUT_COLUMNS", "MgpsFit", "Thresholds", "count_pairs", "count_rows",
    "disproportionality",
    "fit_mgps", "posterior", "stratified_expected", "validate_counts",
]
