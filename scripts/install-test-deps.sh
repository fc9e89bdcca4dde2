#!/usr/bin/env bash
# Installs what the test suite needs beyond Python packages: PostgreSQL, Redis and Chromium
# from Debian, and a MinIO server built from the Go module proxy into ~/.cache/konfer (once per
# pinned version). Safe to run again: it only does what is missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/scripts/versions.env"
# Built servers live outside the checkout so fresh clones (CI) reuse them; keyed by version.
cache="${KONFER_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/konfer}"

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
# Browser tests (tests/e2e) drive Debian's Chromium through Playwright; Playwright's own
# browser download (`playwright install`) is never used.
[[ -x /usr/bin/chromium ]] || need_apt+=(chromium fonts-dejavu-core)
if ((${#need_apt[@]})); then
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  echo "installing Debian packages: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

minio_dir="$cache/bin/minio-$MINIO_VERSION"
if [[ ! -x $minio_dir/minio ]]; then
  command -v go >/dev/null 2>&1 || { echo "Go is required to build MinIO" >&2; exit 1; }
  echo "building MinIO $MINIO_VERSION (first run only; takes several minutes)"
  mkdir -p "$minio_dir.tmp"
  GOBIN="$minio_dir.tmp" GOFLAGS=-trimpath go install "github.com/minio/minio@$MINIO_VERSION"
  rm -rf "$minio_dir" && mv "$minio_dir.tmp" "$minio_dir"
fi
echo "test dependencies ready"
