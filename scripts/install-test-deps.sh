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
# The Kubernetes test control plane (tests/k8s) stores its state in Debian's etcd 3.4.
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
# Speech-recognition tests (tests/integration/test_ai_*) synthesize their speech offline.
command -v espeak-ng >/dev/null 2>&1 || need_apt+=(espeak-ng)
# The chart's alert rules and dashboard queries are parsed by promtool (tests/k8s/test_chart.py).
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
# Live-streaming tests push RTMP to a real nginx with the RTMP module, on loopback.
[[ -x /usr/sbin/nginx && -e /usr/lib/nginx/modules/ngx_rtmp_module.so ]] ||
  need_apt+=(nginx libnginx-mod-rtmp)
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
# kube-apiserver & co., kubectl, kwok, helm and KServe's CRD for tests/k8s (cached by version).
bash "$root/scripts/build-k8s.sh"
# The Prometheus Operator's CRDs, so the chart's ServiceMonitor/PodMonitor/PrometheusRule are
# validated by the test API server too (from the Go module cache; no build).
promop_dir="$cache/crds/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION"
if [[ ! -f $promop_dir/monitoring.coreos.com_prometheusrules.yaml ]]; then
  promop_src=$(cd /tmp && GOFLAGS=-mod=mod go mod download -json \
    "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  mkdir -p "$promop_dir.tmp"
  for kind in servicemonitors podmonitors prometheusrules; do
    cp "$promop_src/example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml" "$promop_dir.tmp/"
  done
  rm -rf "$promop_dir" && mv "$promop_dir.tmp" "$promop_dir"
fi
echo "test dependencies ready"
