"""Disproportionality statistics engine.

Public API (docs/CONTRACTS.md, "Statistics")::

    count_pairs(exposures, events, *, n_total=None)            -> pa.Table  (report-level int64 margins)
    count_pairs_in(con, exposures, events, *, n_total=None)    -> pa.Table  (the same on relations of ``con``)
    disproportionality(counts, *, confidence_level=0.95, thresholds=None, mgps_likelihood="openebgm",
                       mgps_fit=None, haldane=False)            -> (DataFrame, MgpsFit)
    fit_mgps(counts, likelihood="openebgm")                     -> MgpsFit

To score several tables with one prior (the report layer: fit on every ingredient × PT pair, score
substance × PT and substance × PT-group rows), fit once and pass the fit::

    fit = fit_mgps(background_counts)
    rows, _ = disproportionality(substance_counts, mgps_fit=fit)

or call ``fit.posterior(n, expected)`` / :func:`posterior` directly.
"""

from pipeline.lazy import lazy_getattr

# Lazy (PEP 562): the CLI registers ``disproportionality`` without importing numpy/scipy/duckdb, so every command
# (``signals`` included) starts fast; the heavy modules load on first use of a name.
_NAMES = {
    "COUNT_COLUMNS": "counting", "count_pairs": "counting", "count_rows": "counting",
    "stratified_expected": "counting", "stratified_expected_counts": "counting",
    "count_pairs_in": "counting_sql", "stratified_expected_counts_in": "counting_sql",
    "OUTPUT_COLUMNS": "engine", "Thresholds": "rules", "disproportionality": "engine", "validate_counts": "engine",
    "LIKELIHOODS": "mgps", "MgpsFit": "mgps", "fit_mgps": "mgps", "posterior": "mgps",
}

__all__ = sorted(_NAMES)


__getattr__ = lazy_getattr(__name__, _NAMES)


def __dir__():
    return sorted(set(globals()) | set(_NAMES))
