"""Errors a user can act on.

Anything raised as :class:`PipelineError` is printed by the CLI as one line and
turned into a non-zero exit code; everything else is a bug and keeps its traceback
(shown with ``--debug``).

Exit codes: 2 bad input or configuration, 3 source, 4 ingest, 5 validation failed (critical expectation),
6 operating-system error (disk full, permission denied, missing file), 7 out of memory (DuckDB could not stay
within ``resources.memory_limit``), 130 interrupted.
"""

#: exit code of an ``OSError`` the CLI reports as one line (not a :class:`PipelineError`)
OS_ERROR_EXIT = 6


class PipelineError(Exception):
    """Bad input, bad configuration or an unreachable source: a one-line reason."""

    exit_code = 2


class SourceError(PipelineError):
    """The source (FDA page, mirror, folder) could not be read or gave bad files."""

    exit_code = 3


class IngestError(PipelineError):
    """A landing file cannot be ingested (bad zip, wrong header, unsafe member)."""

    exit_code = 4


class ResourceError(PipelineError):
    """A step ran out of memory within the configured ``[resources]`` limits."""

    exit_code = 7
