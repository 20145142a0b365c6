#!/usr/bin/env bash
# Installs everything a fresh Debian machine needs: system tools, then both packages into .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
# tmux: the tests drive `workspace shell` through a real terminal.
APT_PACKAGES=(make curl runc python3 python3-venv slirp4netns nftables iproute2 procps util-linux e2fsprogs mount tmux skopeo busybox-static)
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
.venv/bin/python -m pip install -q -e "./sdk-python[cli]" -e "./server[dev,kubernetes]"
# `workspace` is the SDK's console script; an older server install owned that name, and
# replacing that install removes the file after the SDK wrote it.
if ! grep -q workspace_cli .venv/bin/workspace 2>/dev/null; then
  .venv/bin/python -m pip install -q --no-deps --force-reinstall -e "./sdk-python[cli]"
fi
echo "setup: ok (.venv/bin/workspace)"
