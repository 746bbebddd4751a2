#!/usr/bin/env bash
# Installs everything mamba_ext needs on a fresh Debian/Ubuntu machine and builds the package in place.
# Idempotent: rerunning only rebuilds what changed. Keeps an already installed torch (any version >= 2.4);
# otherwise installs torch==2.13.0 (the CPU wheel on our CI machines). Build isolation stays off so the
# build uses that torch instead of downloading another.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! dpkg -s catch2 cmake >/dev/null 2>&1; then
  SUDO=$([ "$(id -u)" -eq 0 ] && echo "" || echo sudo)
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq catch2 cmake g++ >/dev/null
fi

PY=${PYTHON:-python3}
$PY -c "import torch" 2>/dev/null || $PY -m pip install -q torch==2.13.0
$PY -m pip install -q ninja numpy tqdm matplotlib pytest expecttest setuptools wheel
$PY -m pip install -q --no-build-isolation --no-deps -e .
