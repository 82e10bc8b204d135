"""Errors a user can act on.

Anything raised as :class:`PipelineError` is printed by the CLI as one line and
turned into a non-zero exit code; everything else is a bug and keeps its traceback
(shown with ``--debug``).

Exit codes: 2 bad input or configuration, 3 source, 4 ingest, 5 validation failed (critical expectation),
6 operating-system error (disk full, permission denied, missing file), 7 out of memory (DuckDB could not stay
within ``resources.memory_limit``), 75 the data directory is in use by another
run (``EX_TEMPFAIL``: try again later, or pass ``--wait``), 130 interrupted. A command over several quarters that
carries on past a bad one exits with the code of the first failure after finishing the others.
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


class DataDirBusy(PipelineError):
    """Another run holds the data directory's lock (see :mod:`pipeline.lock`)."""

    exit_code = 75
