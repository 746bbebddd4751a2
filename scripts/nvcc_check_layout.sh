#!/usr/bin/env bash
# Builds and runs scripts/layout_check.cu: host-only checks of the CUDA scan's launch layout (time splits and
# the zero-start passes' parts). Needs nvcc but no GPU; scripts/test.sh runs it with the other nvcc checks.
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$NVCC" -std=c++17 -O1 -Icsrc -o "$out/layout_check" scripts/layout_check.cu
"$out/layout_check"
