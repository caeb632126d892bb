#!/usr/bin/env bash
# Installs, idempotently, every system package and Go build the tests and the demo need.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

apt_packages=(iproute2 iptables ipset socat netcat-openbsd ncat conntrack prometheus prometheus-alertmanager openssl
  kubectl etcd-client busybox chromium)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Go builds (etcd, kube-apiserver, kube-controller-manager, kube-router, kube-network-policies), cached by module
# hash: a no-op once built.
# k8s.io/kubernetes v1.33 needs Go >= 1.24; an older Go >= 1.21 fetches that toolchain itself (GOTOOLCHAIN=auto).
export PATH="$PATH:/usr/local/go/bin:$HOME/go/bin"
if ! command -v go >/dev/null; then
  echo "setup: Go >= 1.24 is required on PATH (https://go.dev/doc/install)" >&2
  exit 1
fi
cd "$here/.."
python3 -m localcluster.build
