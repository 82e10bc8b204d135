"""Data quality: Great Expectations suites for raw, curated and output tables.

Suites are plain JSON in the repository's ``expectations/`` folder (:mod:`pipeline.quality.suites`). They are
loaded into an *ephemeral* GX context (:mod:`pipeline.quality.gx`; nothing of GX is kept on disk except
validation results and the optional Data Docs), run on only the columns the suite names (``result_format`` BASIC
on big tables, SUMMARY with row identifiers on small derived frames), and turned into a compact summary
(:mod:`pipeline.quality.checks`):

* ``critical`` failures raise one :class:`ValidationFailed` whose message is a single line naming the layer,
  table, quarter, expectation and a few offending values; the summary JSON is written first.
* ``warning`` failures are returned in ``summary["warnings"]`` (one line each) and never raised.

Checks that GX would make slow or awkward (cross-table key coverage, deleted caseids, funnel totals) run with
numpy/pyarrow set operations and appear in the same summary as named checks with a severity and
``"engine": "numpy"`` or ``"pyarrow"`` (GX's own are ``"great_expectations"``), so every check reads the same way
in the JSON and in the exception.

Where things go (``DIR`` = the data directory)::

    DIR/validation/raw/<quarter>.json         validate_raw_quarter, RawQuarterValidation   (quality.raw)
    DIR/validation/curated/curated.json       validate_curated                             (quality.curated)
    <report_dir>/validation.json              validate_outputs (+ DIR/validation/outputs/<run_id>.json)
                                                                                           (quality.outputs)
    DIR/validation/gx_results/                GX's own result JSON (latest per suite and scope), always kept
    DIR/validation/data_docs/index.html       GX Data Docs rendered from them: only when asked for (data_docs=True,
                                              FAERS_DATA_DOCS=1, or build_data_docs(DIR) afterwards). Rendering
                                              the curated and output results took longer than validating them on
                                              the whole history, so no command renders them by default

GX is imported lazily (2-3 s) inside these functions, never at module import.
"""

from pipeline.quality.checks import CRITICAL, WARNING, Check, ValidationFailed
from pipeline.quality.curated import CURATED_EXTRA_TABLES, CURATED_TABLES, validate_curated
from pipeline.quality.gx import DATA_DOCS_INDEX_LIMIT, build_data_docs
from pipeline.quality.outputs import signal_rules, validate_outputs
from pipeline.quality.raw import (CEILING_FACTOR, DEFAULT_FLOOR, DEFAULT_ROWS_PER_REPORT, FDA_TYPICAL_ROWS,
                                  RawQuarterValidation, validate_raw_quarter)
from pipeline.quality.suites import EXPECTATIONS_DIR, load_suite, raw_suite_name, suite_columns

__all__ = [
    "CEILING_FACTOR", "CRITICAL", "CURATED_EXTRA_TABLES", "CURATED_TABLES", "DATA_DOCS_INDEX_LIMIT", "DEFAULT_FLOOR",
    "DEFAULT_ROWS_PER_REPORT", "EXPECTATIONS_DIR", "FDA_TYPICAL_ROWS", "WARNING", "Check", "RawQuarterValidation",
    "ValidationFailed", "build_data_docs", "load_suite", "raw_suite_name", "signal_rules", "suite_columns",
    "validate_curated", "validate_outputs", "validate_raw_quarter",
]
