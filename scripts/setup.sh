#!/usr/bin/env bash
# Installs everything a fresh Debian machine needs: system tools, then both packages into .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
APT_PACKAGES=(make curl runc python3 python3-venv slirp4netns nftables iproute2 procps util-linux e2fsprogs mount)
missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then "$PY" -m venv .venv; fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ./sdk-python -e "./server[dev,kubernetes]"
echo "setup: ok (.venv/bin/workspace)"
