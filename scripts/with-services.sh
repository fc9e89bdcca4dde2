#!/usr/bin/env bash
# Runs a command with PostgreSQL, Redis and MinIO started on loopback, data in a fresh
# temporary folder, and stops every server again when the command ends — on failure and
# on Ctrl+C too. The command finds the servers through KONFER_TEST_* variables.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/scripts/versions.env"
# Built servers live outside the checkout so fresh clones (CI) reuse them; keyed by version.
cache="${KONFER_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/konfer}"

work=$(mktemp -d "${TMPDIR:-/tmp}/konfer-test.XXXXXX")
pids=()
pg_bin=$(dirname "$(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n1)")
as_pg=()

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -f $work/pg/postmaster.pid ]]; then
    "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pg" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_for() {  # wait_for NAME SECONDS COMMAND...
  local name=$1 deadline=$((SECONDS + $2)); shift 2
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then echo "$name did not start; log follows" >&2; cat "$work/$name.log" >&2 || true; return 1; fi
    sleep 0.2
  done
}

# PostgreSQL refuses to run as root, so root runs it as the postgres user.
pg_port=$(free_port)
mkdir -p "$work/pg" "$work/pgsock"
if [[ $(id -u) -eq 0 ]]; then
  chown -R postgres:postgres "$work/pg" "$work/pgsock"
  chmod 755 "$work"
  as_pg=(runuser -u postgres --)
fi
"${as_pg[@]}" "$pg_bin/initdb" -D "$work/pg" -U konfer --auth=trust -E UTF8 --no-sync >"$work/postgres.log" 2>&1
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pg" -l "$work/pg/server.log" -w -t 60 \
  -o "-h 127.0.0.1 -p $pg_port -k $work/pgsock -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" start >>"$work/postgres.log" 2>&1
"${as_pg[@]}" "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U konfer konfer_test

redis_port=$(free_port)
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no \
  --dir "$work" --protected-mode yes >"$work/redis.log" 2>&1 &
pids+=($!)
wait_for redis 30 redis-cli -p "$redis_port" ping

minio_port=$(free_port)
minio_console=$(free_port)
mkdir -p "$work/minio"
MINIO_ROOT_USER=konfer-test MINIO_ROOT_PASSWORD=konfer-test-secret MINIO_BROWSER=off \
MINIO_UPDATE=off MINIO_CI_CD=1 \
  "$cache/bin/minio-$MINIO_VERSION/minio" server "$work/minio" \
  --address "127.0.0.1:$minio_port" --console-address "127.0.0.1:$minio_console" --quiet \
  >"$work/minio.log" 2>&1 &
pids+=($!)
wait_for minio 60 curl -sf "http://127.0.0.1:$minio_port/minio/health/live"

export KONFER_TEST_DATABASE_URL="postgresql+psycopg://konfer@127.0.0.1:$pg_port/konfer_test"
export KONFER_TEST_PG_ADMIN_URL="postgresql://konfer@127.0.0.1:$pg_port/postgres"
export KONFER_TEST_REDIS_URL="redis://127.0.0.1:$redis_port/0"
export KONFER_TEST_S3_ENDPOINT="127.0.0.1:$minio_port"
export KONFER_TEST_S3_ACCESS_KEY=konfer-test
export KONFER_TEST_S3_SECRET_KEY=konfer-test-secret
echo "services up: postgres :$pg_port, redis :$redis_port, minio :$minio_port"
"$@"
