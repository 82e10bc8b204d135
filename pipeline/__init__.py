"""FAERS disproportionality pipeline for ketamine-family substances.

Data flow (one module per stage)::

    sources (fetch)  ->  ingest  ->  quality  ->  curate  ->  stats  ->  reports
         landing/          raw/     validation/   curated/             reports/<run_id>/

The CLI (:mod:`pipeline.cli`) and the Airflow DAGs (``dags/``) call the same plain
functions; nothing here imports Airflow.
"""

__version__ = "0.1.0"
