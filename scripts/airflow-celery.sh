#!/usr/bin/env bash
# `make airflow-celery` / `make airflow-celery-stop`: the production topology of docker-compose.yml without Docker.
#
#   scripts/airflow-celery.sh start     Airflow 3.3 with CeleryExecutor on the machine's PostgreSQL and Redis:
#                                       api-server, scheduler, dag-processor, triggerer and two Celery workers, each
#                                       a separate process (own process group, pid file in $AIRFLOW_HOME/run/);
#                                       returns once every component is up and prints the login.
#   scripts/airflow-celery.sh stop      stops exactly the processes `start` recorded (SIGTERM, SIGKILL after 30 s)
#   scripts/airflow-celery.sh status    which recorded processes are alive
#
# PostgreSQL: a role and a database of their own (AIRFLOW_CELERY_NAME, default faers_airflow; never `postgres`),
# created through the superuser PGSUPERUSER (default postgres) on first start. Redis: the broker, database number
# AIRFLOW_CELERY_REDIS_DB (default 11) of 127.0.0.1:6379. Settings (executor, broker and result backend URLs, FAB
# auth manager, JWT/secret/Fernet handling, worker concurrency) come from pipeline/airflow_celery_config.py, the
# module docker-compose.yml is tested against. Secrets are generated once into $AIRFLOW_HOME/secrets.env (mode 600).
#
# Environment (all optional):
#   AIRFLOW_HOME (.airflow-celery)  AIRFLOW_PORT (8080)  AIRFLOW_LOG_PORT_BASE (8793: worker 1, +1 triggerer, +2 worker 2)
#   PGHOST (127.0.0.1) PGPORT (5432) PGSUPERUSER (postgres)  REDIS_HOST (127.0.0.1) REDIS_PORT (6379)
#   AIRFLOW_WORKERS (2)  AIRFLOW_WORKER_CONCURRENCY (2)  FAERS_SOURCE (default: synthetic mirror in data/mirror)
#   FAERS_DATA_DIR (data/airflow-celery)  FAERS_CONFIG  AIRFLOW_START_TIMEOUT (240 s)
# Any other AIRFLOW__SECTION__KEY in the environment reaches every component (e.g. a shorter heartbeat timeout).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV_BIN="${VENV_BIN:-$ROOT/.venv/bin}"
[[ -x "$VENV_BIN/airflow" ]] || { echo "error: $VENV_BIN/airflow not found (run \`make venv\` first)" >&2; exit 1; }
export PATH="$VENV_BIN:$PATH"
PY="$VENV_BIN/python"

HOME_DIR="$(mkdir -p "${AIRFLOW_HOME:-$ROOT/.airflow-celery}" && cd "${AIRFLOW_HOME:-$ROOT/.airflow-celery}" && pwd)"
RUN="$HOME_DIR/run"
LOGS="$HOME_DIR/logs"
NAME="${AIRFLOW_CELERY_NAME:-faers_airflow}"
PORT="${AIRFLOW_PORT:-8080}"
LOG_BASE="${AIRFLOW_LOG_PORT_BASE:-8793}"
WORKERS="${AIRFLOW_WORKERS:-2}"
PGHOST="${PGHOST:-127.0.0.1}"; PGPORT="${PGPORT:-5432}"; PGSUPERUSER="${PGSUPERUSER:-postgres}"
REDIS_HOST="${REDIS_HOST:-127.0.0.1}"; REDIS_PORT="${REDIS_PORT:-6379}"; REDIS_DB="${AIRFLOW_CELERY_REDIS_DB:-11}"
TIMEOUT="${AIRFLOW_START_TIMEOUT:-240}"

die() { echo "error: $*" >&2; exit 1; }
[[ "$NAME" =~ ^[a-z_][a-z0-9_]*$ ]] || die "AIRFLOW_CELERY_NAME must be a plain lower-case identifier, not '$NAME'"
[[ "$NAME" != postgres ]] || die "AIRFLOW_CELERY_NAME must not be postgres: the stack uses a role of its own"

# --- processes: one pid file per component, "pid start-time" (the start time guards against a recycled pid) ---
start_time() {  # field 22 of /proc/PID/stat, counted after the ")" that closes the (renamable) command name
  local s
  s="$(cat "/proc/$1/stat" 2> /dev/null)" || return 0
  s="${s##*) }"
  awk '{print $20}' <<< "$s"
}
alive() {  # alive NAME -> 0 if the recorded process still runs
  local f="$RUN/$1.pid" pid st
  [[ -s "$f" ]] || return 1
  read -r pid st < "$f"
  [[ -n "$pid" && "$(start_time "$pid")" == "$st" ]]
}
launch() {  # launch NAME ENV-ASSIGNMENTS... -- airflow ARGS...
  local name="$1"; shift
  local envs=()
  while [[ "$1" != "--" ]]; do envs+=("$1"); shift; done
  shift
  # setsid: its own session and process group, so `stop` ends the component and every child it forked
  env "${envs[@]}" setsid "$@" >> "$LOGS/$name.log" 2>&1 < /dev/null &
  local pid=$!
  sleep 0.2
  echo "$pid $(start_time "$pid")" > "$RUN/$name.pid"
}
components() {
  echo api-server scheduler dag-processor triggerer
  for i in $(seq 1 "$WORKERS"); do echo "worker$i"; done
}

stop() {
  local any=0 name pid st
  [[ -d "$RUN" ]] || { echo "nothing recorded in $RUN"; return 0; }
  for f in "$RUN"/*.pid; do
    [[ -e "$f" ]] || continue
    name="$(basename "$f" .pid)"
    if alive "$name"; then
      read -r pid st < "$f"
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      any=1
    else
      rm -f "$f"
    fi
  done
  for _ in $(seq 1 30); do
    local left=0
    for f in "$RUN"/*.pid; do [[ -e "$f" ]] && alive "$(basename "$f" .pid)" && left=1; done
    [[ $left == 0 ]] && break
    sleep 1
  done
  for f in "$RUN"/*.pid; do
    [[ -e "$f" ]] || continue
    name="$(basename "$f" .pid)"
    if alive "$name"; then
      read -r pid st < "$f"
      echo "$name did not stop within 30 s: SIGKILL" >&2
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
  done
  [[ $any == 1 ]] && echo "stopped the Airflow Celery stack of $HOME_DIR" || echo "no running component recorded in $RUN"
}

status() {
  local rc=0
  for name in $(components); do
    if alive "$name"; then echo "$name: running (pid $(cut -d' ' -f1 "$RUN/$name.pid"))"; else echo "$name: stopped"; rc=1; fi
  done
  return $rc
}

psql_su() { psql -h "$PGHOST" -p "$PGPORT" -U "$PGSUPERUSER" -d postgres -v ON_ERROR_STOP=1 -qtA "$@"; }

start() {
  mkdir -p "$RUN" "$LOGS"
  for name in $(components); do
    alive "$name" && die "$name is already running (pid $(cut -d' ' -f1 "$RUN/$name.pid")); \`make airflow-celery-stop\` first"
  done
  command -v psql > /dev/null || die "psql not found (PostgreSQL client)"
  psql_su -c 'select 1' > /dev/null 2>&1 || die "PostgreSQL is not reachable at $PGHOST:$PGPORT as $PGSUPERUSER"
  "$PY" -c "import redis, sys; redis.Redis(host=sys.argv[1], port=int(sys.argv[2]), socket_timeout=3).ping()" \
    "$REDIS_HOST" "$REDIS_PORT" 2> /dev/null || die "Redis is not reachable at $REDIS_HOST:$REDIS_PORT"

  local settings
  settings="$("$PY" -m pipeline.airflow_celery_config env --root "$ROOT" --home "$HOME_DIR" --name "$NAME" \
      --pg-host "$PGHOST" --pg-port "$PGPORT" --redis-host "$REDIS_HOST" --redis-port "$REDIS_PORT" \
      --redis-db "$REDIS_DB" --api-port "$PORT" --worker-concurrency "${AIRFLOW_WORKER_CONCURRENCY:-2}")"
  eval "$settings"

  # the stack's own role and database (the password is kept in step with secrets.env)
  if [[ "$(psql_su -c "select 1 from pg_roles where rolname = '$NAME'")" != 1 ]]; then
    psql_su -c "create role $NAME login password '$POSTGRES_PASSWORD'"
  else
    psql_su -c "alter role $NAME login password '$POSTGRES_PASSWORD'"
  fi
  if [[ "$(psql_su -c "select 1 from pg_database where datname = '$NAME'")" != 1 ]]; then
    psql_su -c "create database $NAME owner $NAME"
  fi

  export FAERS_DATA_DIR="${FAERS_DATA_DIR:-$ROOT/data/airflow-celery}"
  if [[ -z "${FAERS_SOURCE:-}" ]]; then
    local mirror="$ROOT/data/mirror"
    if ! compgen -G "$mirror/faers_ascii_*.zip" > /dev/null; then
      echo "No FAERS_SOURCE given: writing a SYNTHETIC FAERS mirror to $mirror (offline) ..."
      "$PY" -m pipeline --quiet sample --out "$mirror"
    fi
    export FAERS_SOURCE="file://$mirror"
  fi
  mkdir -p "$FAERS_DATA_DIR"

  echo "migrating the metadata database $NAME on $PGHOST:$PGPORT ..."
  airflow db migrate >> "$LOGS/init.log" 2>&1 || die "airflow db migrate failed (see $LOGS/init.log)"
  local created_admin=0
  if ! airflow users list -o plain 2>/dev/null | awk '{print $2}' | grep -qx admin; then
    airflow users create --username admin --password "$AIRFLOW_ADMIN_PASSWORD" --role Admin \
      --email admin@localhost --firstname Airflow --lastname Admin >> "$LOGS/init.log" 2>&1 \
      || die "could not create the admin user (see $LOGS/init.log)"
    created_admin=1
  fi

  launch api-server -- airflow api-server
  launch scheduler -- airflow scheduler
  launch dag-processor -- airflow dag-processor
  launch triggerer AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=$((LOG_BASE + 1)) -- airflow triggerer
  for i in $(seq 1 "$WORKERS"); do
    local port=$((LOG_BASE + (i == 1 ? 0 : i)))
    launch "worker$i" FAERS_WORKER_NAME="w$i" AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=$port -- \
      airflow celery worker --celery-hostname "w$i@%h"
  done

  echo "waiting for every component (up to ${TIMEOUT} s) ..."
  local t0=$SECONDS ok=0
  while (( SECONDS - t0 < TIMEOUT )); do
    for name in $(components); do
      alive "$name" || { stop > /dev/null; die "$name exited during start-up (see $LOGS/$name.log)"; }
    done
    if "$PY" - "$PORT" <<'EOF' 2> /dev/null
import json, sys, urllib.request
h = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/api/v2/monitor/health", timeout=3))
assert all((h.get(c) or {}).get("status") == "healthy" for c in ("metadatabase", "scheduler", "triggerer", "dag_processor"))
EOF
    then
      local ready=0
      for i in $(seq 1 "$WORKERS"); do grep -q "w$i@.* ready\." "$LOGS/worker$i.log" 2> /dev/null && ready=$((ready + 1)); done
      (( ready == WORKERS )) && { ok=1; break; }
    fi
    sleep 2
  done
  (( ok )) || { stop > /dev/null; die "the stack did not come up within ${TIMEOUT} s (logs in $LOGS)"; }

  echo
  echo "  Airflow (CeleryExecutor) http://127.0.0.1:${PORT}/   up in $((SECONDS - t0)) s"
  if (( created_admin )); then
    echo "  login: admin / ${AIRFLOW_ADMIN_PASSWORD}   (shown once; kept in $HOME_DIR/secrets.env)"
  else
    echo "  login: admin, password in $HOME_DIR/secrets.env (AIRFLOW_ADMIN_PASSWORD)"
  fi
  echo "  metadata DB  postgresql://$NAME@$PGHOST:$PGPORT/$NAME    broker redis://$REDIS_HOST:$REDIS_PORT/$REDIS_DB"
  echo "  workers      $(for i in $(seq 1 "$WORKERS"); do printf 'w%s ' "$i"; done)(concurrency ${AIRFLOW__CELERY__WORKER_CONCURRENCY} each)"
  echo "  FAERS_SOURCE $FAERS_SOURCE"
  echo "  FAERS_DATA_DIR $FAERS_DATA_DIR"
  echo "  logs         $LOGS        stop: make airflow-celery-stop"
  echo
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: $0 [start|stop|status]" ;;
esac
