# Production image for the FAERS pipeline's Airflow services (see docker-compose.yml and docs/airflow.md).
# The official Airflow image, plus our pinned requirements under our lock, plus the project code.
FROM apache/airflow:3.3.2-python3.11

ARG AIRFLOW_VERSION=3.3.2
USER airflow
COPY --chown=airflow:0 requirements.txt constraints.txt /tmp/faers-reqs/
# Keep the image's Airflow: drop our own apache-airflow pin and name the image's version explicitly
# (the official way to stop pip from moving Airflow); everything else resolves under our lock.
# `pip check` fails the build if the lock and the image's preinstalled providers disagree.
RUN grep -v -E '^apache-airflow==' /tmp/faers-reqs/requirements.txt > /tmp/faers-reqs/requirements-image.txt \
 && pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" \
        -r /tmp/faers-reqs/requirements-image.txt -c /tmp/faers-reqs/constraints.txt \
 && pip check \
 && rm -rf /tmp/faers-reqs

# Project code: tasks import `pipeline` from /opt/airflow (PYTHONPATH); GX suites live in expectations/.
COPY --chown=airflow:0 pipeline/ /opt/airflow/pipeline/
COPY --chown=airflow:0 expectations/ /opt/airflow/expectations/
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/

ENV PYTHONPATH=/opt/airflow \
    FAERS_DATA_DIR=/opt/airflow/faers-data \
    GX_ANALYTICS_ENABLED=false
# The named data volume is seeded from this directory, so it starts owned by the airflow user.
RUN mkdir -p /opt/airflow/faers-data
