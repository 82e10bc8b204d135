#!/usr/bin/env bash
# `make airflow`: Airflow standalone (scheduler, dag-processor, api-server, triggerer) on SQLite with the
# project's DAGs, offline-capable. Everything lives in a project-local AIRFLOW_HOME (.airflow/, git-ignored).
#
# Environment (all optional):
#   FAERS_SOURCE      where faers_ingest fetches from; default: a local synthetic mirror in data/mirror
#                     (created with `python -m pipeline sample` when it does not exist; SYNTHETIC data)
#   FAERS_DATA_DIR    pipeline data directory; default: data/airflow (kept apart from `make demo`'s data/)
#   FAERS_CONFIG      pipeline config TOML; default: the shipped pipeline/default_config.toml
#   AIRFLOW_HOME      default: .airflow          AIRFLOW_PORT         default: 8080 (bound to 127.0.0.1)
#   AIRFLOW_PARALLELISM  default: 3 (task slots; each is a ~150 MB process)
#   AIRFLOW_DAGS_PAUSED  default: True (unpause faers_ingest and ketamine_signals in the UI to run them)
# Ctrl-C (or SIGINT/SIGTERM to this script) stops every Airflow process it started.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV_BIN="${VENV_BIN:-$ROOT/.venv/bin}"
[[ -x "$VENV_BIN/airflow" ]] || { echo "error: $VENV_BIN/airflow not found (run \`make venv\` first)" >&2; exit 1; }
export PATH="$VENV_BIN:$PATH"            # standalone starts its components as `airflow ...` from PATH
PY="$VENV_BIN/python"
PORT="${AIRFLOW_PORT:-8080}"

export AIRFLOW_HOME="${AIRFLOW_HOME:-$ROOT/.airflow}"
export AIRFLOW__CORE__DAGS_FOLDER="$ROOT/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$ROOT/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__PARALLELISM="${AIRFLOW_PARALLELISM:-3}"
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="${AIRFLOW_DAGS_PAUSED:-True}"
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:${PORT}/execution/"
export AIRFLOW__API__HOST=127.0.0.1
export AIRFLOW__API__PORT="$PORT"
export AIRFLOW__API__WORKERS=1
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="$AIRFLOW_HOME/simple_auth_manager_passwords.json"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"   # tasks import pipeline/ from the repo root
export GX_ANALYTICS_ENABLED=false
mkdir -p "$AIRFLOW_HOME"

# Login: a random admin password, written once (SimpleAuthManager reads this file as is; dev use only).
PWFILE="$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"
if [[ ! -s "$PWFILE" ]]; then
  (umask 077; "$PY" -c 'import json, secrets; print(json.dumps({"admin": secrets.token_urlsafe(16)}))' > "$PWFILE")
fi
PASSWORD="$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["admin"])' "$PWFILE")"

# Data: offline by default, on a synthetic mirror made once.
export FAERS_DATA_DIR="${FAERS_DATA_DIR:-$ROOT/data/airflow}"
if [[ -z "${FAERS_SOURCE:-}" ]]; then
  MIRROR="$ROOT/data/mirror"
  if ! compgen -G "$MIRROR/faers_ascii_*.zip" > /dev/null; then
    echo "No FAERS_SOURCE given: writing a SYNTHETIC FAERS mirror to $MIRROR (offline) ..."
    "$PY" -m pipeline --quiet sample --out "$MIRROR"
  fi
  export FAERS_SOURCE="file://$MIRROR"
fi
mkdir -p "$FAERS_DATA_DIR"

banner() {
  cat <<EOF

  Airflow UI   http://127.0.0.1:${PORT}/     user: admin   password: ${PASSWORD}
  (password stored in ${PWFILE})
  DAGs         faers_ingest, ketamine_signals   (unpause both, then trigger faers_ingest)
  FAERS_SOURCE ${FAERS_SOURCE}
  FAERS_DATA_DIR ${FAERS_DATA_DIR}
  AIRFLOW_HOME ${AIRFLOW_HOME}            Stop with Ctrl-C.

EOF
}
banner

set -m   # job control: the Airflow processes get their own process group and do not ignore SIGINT
airflow standalone &
SPID=$!
# Print the banner again once the API answers (the component logs scroll past it).
( for _ in $(seq 1 180); do
    if "$PY" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:${PORT}/api/v2/monitor/health', timeout=2)" 2>/dev/null; then
      echo; echo "  Airflow is up."; banner; exit 0
    fi
    sleep 1
  done ) &
WPID=$!

stop() {
  trap - INT TERM
  kill "$WPID" 2>/dev/null || true
  kill -INT -- "-$SPID" 2>/dev/null || true
  for _ in $(seq 1 30); do kill -0 "$SPID" 2>/dev/null || break; sleep 1; done
  if kill -0 "$SPID" 2>/dev/null; then
    echo "Airflow did not stop within 30 s: sending SIGTERM" >&2
    kill -TERM -- "-$SPID" 2>/dev/null || true
    sleep 5
    kill -KILL -- "-$SPID" 2>/dev/null || true
  fi
}
trap stop INT TERM
rc=0
wait "$SPID" || rc=$?
kill "$WPID" 2>/dev/null || true
exit "$rc"
