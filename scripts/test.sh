#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs every test: pytest (CUDA tests skip without a GPU), the C++ Catch2
# tests through CTest, and, when nvcc exists, compile checks of the CUDA kernels and their host wrappers and
# the launch-layout checks (scripts/nvcc_check_layout.sh, run on the host without a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# pytest exits 5 when it collects nothing: that is a failure here too (set -e).
python3 -m pytest tests -q -p no:cacheprovider "$@"

prefix=$(python3 -c "import torch.utils; print(torch.utils.cmake_prefix_path)")
cmake -S tests/cpp -B tests/cpp/build -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build tests/cpp/build -j"$(nproc)" >/dev/null
ctest --test-dir tests/cpp/build --output-on-failure

if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  for check in scripts/nvcc_check*.sh; do bash "$check"; done
else
  echo "nvcc not found: skipping the CUDA compile check"
fi
