#!/usr/bin/env bash
# Installs what `make bench` needs beyond scripts/setup.sh: podman (the container baseline)
# with its rootless helpers, and py-spy (samples the in-sandbox agent). Idempotent: installs
# only what is missing, so running it before every benchmark costs a dpkg query.
set -euo pipefail
cd "$(dirname "$0")/.."
APT_PACKAGES=(podman uidmap fuse-overlayfs slirp4netns catatonit runc)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "setup-bench: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ -x .venv/bin/python ] && ! .venv/bin/python -c 'import pyinstrument' 2>/dev/null; then
  .venv/bin/python -m pip install -q pyinstrument
fi
if [ -x .venv/bin/python ] && [ ! -x .venv/bin/py-spy ]; then
  .venv/bin/python -m pip install -q py-spy || echo "setup-bench: py-spy unavailable (agent profile skipped)" >&2
fi
echo "setup-bench: ok"
