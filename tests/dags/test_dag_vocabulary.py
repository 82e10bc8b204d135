"""The DAGs' Param vocabularies (literals in ``dags/include``, which may not import ``pipeline`` at parse time) equal
the pipeline's own: substances, roles, MGPS likelihoods, quarter syntax."""

from __future__ import annotations

import re


def test_dag_params_use_the_pipeline_vocabulary(dagbag):
    from pipeline.quarters import parse_range
    from pipeline.settings import MGPS_LIKELIHOODS, ROLE_CODES, SUBSTANCES

    params = dagbag.dags["ketamine_signals"].params
    assert params.get_param("substances").schema["items"]["enum"] == [*SUBSTANCES, "ketamine_family"]
    assert params.get_param("roles").schema["items"]["enum"] == list(ROLE_CODES)
    assert params.get_param("mgps_likelihood").schema["enum"] == [None, *MGPS_LIKELIHOODS]
    pattern = dagbag.dags["faers_ingest"].params.get_param("quarters").schema["pattern"]
    for ok in ("2024Q3", "2023Q1:2024Q4", "2023Q1,2024Q2"):
        assert re.match(pattern, ok) and parse_range(ok)
    assert not re.match(pattern, "2024Q9")


def test_dag_tasks_have_docstrings(dagbag):
    for dag in dagbag.dags.values():
        for t in dag.tasks:
            doc = getattr(t, "doc_md", None) or getattr(t, "doc", None) or getattr(t, "python_callable", None).__doc__
            assert doc and doc.strip(), f"{dag.dag_id}.{t.task_id} has no docstring"
