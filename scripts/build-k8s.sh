#!/usr/bin/env bash
# Builds the kubelet-less Kubernetes control plane the tests/k8s suite runs against, from the Go
# module proxy, into a cache keyed by version (so only the first run builds):
#   helm, kwok, kube-apiserver, kube-controller-manager, kube-scheduler,
#   kubectl, and KServe's InferenceService CRD copied out of the module cache.
# Called by scripts/install-test-deps.sh (which also installs Debian's etcd-server); safe to run
# again. Versions are pinned in scripts/versions.env.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/scripts/versions.env"
cache="${KONFER_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/konfer}"
bin="$cache/bin"
mkdir -p "$bin"
# Outside any Go module, so `go mod download` and `go install pkg@version` mean the proxy's.
cd "$bin"
require_go() {
  command -v go >/dev/null 2>&1 || { echo "Go is required to build the Kubernetes test binaries" >&2; exit 1; }
}

elapsed() { echo "$(($(date +%s) - $1))s"; }

# Moves a finished build into place in one step, so an interrupted build is never mistaken for
# a cached one.
publish() { rm -rf "$2" && mv "$1" "$2"; }

helm_dir="$bin/helm-$HELM_VERSION"
if [[ ! -x $helm_dir/helm ]]; then
  require_go
  echo "building helm $HELM_VERSION (first run only)"
  t=$(date +%s)
  rm -rf "$helm_dir.tmp" && mkdir -p "$helm_dir.tmp"
  GOBIN="$helm_dir.tmp" go install -trimpath \
    -ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  publish "$helm_dir.tmp" "$helm_dir"
  echo "helm built in $(elapsed "$t")"
fi

# kwok plays the kubelet on fake nodes; the pod Stages it plays are tests/k8s/kwok-stages.yaml.
kwok_dir="$bin/kwok-$KWOK_VERSION"
if [[ ! -x $kwok_dir/kwok ]]; then
  require_go
  echo "building kwok $KWOK_VERSION (first run only)"
  t=$(date +%s)
  rm -rf "$kwok_dir.tmp" && mkdir -p "$kwok_dir.tmp"
  GOBIN="$kwok_dir.tmp" go install -trimpath \
    -ldflags="-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  publish "$kwok_dir.tmp" "$kwok_dir"
  echo "kwok built in $(elapsed "$t")"
fi

kserve_dir="$bin/kserve-$KSERVE_VERSION"
if [[ ! -f $kserve_dir/serving.kserve.io_inferenceservices.yaml ]]; then
  require_go
  echo "fetching KServe $KSERVE_VERSION InferenceService CRD"
  kserve_src=$(go mod download -json "github.com/kserve/kserve@$KSERVE_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  rm -rf "$kserve_dir.tmp" && mkdir -p "$kserve_dir.tmp"
  cp "$kserve_src/config/crd/full/serving.kserve.io_inferenceservices.yaml" "$kserve_dir.tmp/"
  chmod -R u+w "$kserve_dir.tmp"
  publish "$kserve_dir.tmp" "$kserve_dir"
fi

k8s_dir="$bin/kubernetes-$KUBERNETES_VERSION"
k8s_cmds=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
missing=0
for c in "${k8s_cmds[@]}"; do [[ -x $k8s_dir/$c ]] || missing=1; done
if ((missing)); then
  require_go
  echo "building Kubernetes $KUBERNETES_VERSION control plane (first run only; takes a while)"
  t=$(date +%s)
  # k8s.io/kubernetes cannot be built with `go install pkg@version`: its go.mod points every
  # staging module (k8s.io/api, k8s.io/apiserver, ...) at ./staging, which a module zip lacks.
  # A small wrapper module requires it and replaces each staging module with its published
  # v0.x release; every other requirement is pinned to exactly the version Kubernetes uses so
  # the graph matches the upstream build.
  gomod=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
  wrap="$cache/src/kubernetes-$KUBERNETES_VERSION"
  rm -rf "$wrap" && mkdir -p "$wrap"
  declare -A override=()
  for o in $KUBERNETES_STAGING_OVERRIDES; do override[${o%@*}]=${o#*@}; done
  {
    echo "module konfer.test/kubernetes"
    echo
    sed -n -e 's/^go \(.*\)$/go \1/p' -e '/^godebug /p' "$gomod"
    echo
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    echo
    echo "replace ("
    # Staging modules -> published release.
    awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "$gomod" | while read -r m; do
      echo "	$m => $m ${override[$m]:-$KUBERNETES_STAGING_VERSION}"
    done
    # Everything else -> the exact version k8s.io/kubernetes requires.
    awk '/^require \(/{r=1; next} r && /^\)/{r=0} r && $2 != "v0.0.0" {print $1, $2}' "$gomod" |
      while read -r m v; do echo "	$m => $m $v"; done
    echo ")"
  } >"$wrap/go.mod"
  major=${KUBERNETES_VERSION#v}; major=${major%%.*}
  minor=${KUBERNETES_VERSION#v*.}; minor=${minor%%.*}
  ldflags="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=$KUBERNETES_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor"
    ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  rm -rf "$k8s_dir.tmp" && mkdir -p "$k8s_dir.tmp"
  pkgs=()
  for c in "${k8s_cmds[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  (
    cd "$wrap"
    export GOFLAGS="-mod=mod -buildvcs=false"
    [[ -n ${KUBERNETES_GO_TOOLCHAIN:-} ]] && export GOTOOLCHAIN=$KUBERNETES_GO_TOOLCHAIN
    go build -trimpath -tags=providerless -ldflags="$ldflags" -o "$k8s_dir.tmp/" "${pkgs[@]}"
  )
  publish "$k8s_dir.tmp" "$k8s_dir"
  echo "Kubernetes control plane built in $(elapsed "$t")"
fi
echo "Kubernetes test binaries ready in $bin"
