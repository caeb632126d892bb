#!/usr/bin/env bash
# Installs, idempotently, every system package and Go build the tests and the demo need.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

apt_packages=(iproute2 iptables ipset socat netcat-openbsd ncat conntrack prometheus openssl)
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
