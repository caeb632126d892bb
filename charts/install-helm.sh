#!/usr/bin/env bash
# Installs helm v3 (the chart's tests run the real `helm lint`, `helm template` and `helm install`), idempotently.
#
# No package of the registries the project uses ships a plain helm v3 binary, so helm is built from its Go module
# with the same version and Kubernetes-version ldflags as helm's own Makefile. The Go build cache makes a rebuild a
# matter of seconds. Prints the path of the binary on stdout.
#
# Usage: charts/install-helm.sh [--print-path]
#   HELM_VERSION   helm version to install (default below)
#   TOOLS_DIR      where to put it (default: ~/.cache/netpol-auditor/bin, shared by every clone of the project)
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.19.5}"
PATH="$PATH:/usr/local/go/bin"  # where the machine image keeps Go when PATH lacks it
# helm's Makefile derives these from its k8s.io/client-go requirement (v0.34.x -> Kubernetes 1.34).
K8S_MAJOR=1
K8S_MINOR=34
TOOLS_DIR="${TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/netpol-auditor/bin}"
target="$TOOLS_DIR/helm-$HELM_VERSION"

if [[ ! -x "$target" ]] || ! "$target" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION"; then
  command -v go >/dev/null || { echo "install-helm: go is required (localcluster/setup.sh installs it)" >&2; exit 1; }
  mkdir -p "$TOOLS_DIR"
  build="$(mktemp -d)"
  trap 'rm -rf "$build"' EXIT
  echo "install-helm: building helm $HELM_VERSION from its Go module (first time only)" >&2
  pkg=helm.sh/helm/v3
  GOBIN="$build" GOFLAGS=-mod=mod go install -trimpath -ldflags "-w -s \
    -X $pkg/internal/version.version=$HELM_VERSION \
    -X $pkg/internal/version.gitTreeState=clean \
    -X $pkg/pkg/lint/rules.k8sVersionMajor=$K8S_MAJOR -X $pkg/pkg/lint/rules.k8sVersionMinor=$K8S_MINOR \
    -X $pkg/pkg/chartutil.k8sVersionMajor=$K8S_MAJOR -X $pkg/pkg/chartutil.k8sVersionMinor=$K8S_MINOR" \
    "$pkg/cmd/helm@$HELM_VERSION" >&2
  mv "$build/helm" "$target"
fi
ln -sfn "helm-$HELM_VERSION" "$TOOLS_DIR/helm"
echo "$target"
