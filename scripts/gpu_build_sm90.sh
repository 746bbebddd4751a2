# Sourced by the GPU-machine scripts (after OUT is set): names the device in $OUT/device.txt, then builds the
# working tree for sm_90 as an editable install, logging to the file given as $1 (the caller exits if it fails).
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/device.txt"
build_start=$(date +%s)
MAX_JOBS=16 TORCH_CUDA_ARCH_LIST=9.0 python3 -m pip install --no-build-isolation --no-deps -e . >"$1" 2>&1 \
  || { tail -40 "$1"; exit 1; }
echo "build sm_90: $(( $(date +%s) - build_start )) s" | tee -a "$OUT/device.txt"
