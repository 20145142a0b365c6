#!/usr/bin/env bash
# Installs everything a fresh Debian machine needs: system tools, then both packages into .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
# tmux: the tests drive `workspace shell` through a real terminal; chromium: they drive the
# web console in a real browser (headless, through Playwright; no browser download).
# nfs-ganesha, dbus-daemon: `serve --nfs`; libnfs-utils: the NFS tests' userspace client.
APT_PACKAGES=(make curl runc python3 python3-venv slirp4netns nftables iproute2 procps util-linux e2fsprogs mount tmux
  skopeo busybox-static mmdebstrap chromium nfs-ganesha nfs-ganesha-vfs dbus-daemon libnfs-utils)
missing=()
for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The console's front-end packages (xterm.js), at the versions package-lock.json pins. npm is
# needed here only: the server serves the installed files, no Node at run time.
if ! command -v npm >/dev/null; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends npm >/dev/null
fi
CONSOLE=server/src/workspace_server/console
if ! cmp -s "$CONSOLE/package-lock.json" "$CONSOLE/node_modules/.installed-from-lock" 2>/dev/null; then
  (cd "$CONSOLE" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
  cp "$CONSOLE/package-lock.json" "$CONSOLE/node_modules/.installed-from-lock"
fi
# `workspace serve --nfs` runs its own nfs-ganesha; the distribution's service would hold port 2049.
if command -v systemctl >/dev/null && systemctl is-enabled nfs-ganesha >/dev/null 2>&1; then
  systemctl disable --now nfs-ganesha >/dev/null 2>&1 || true
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
