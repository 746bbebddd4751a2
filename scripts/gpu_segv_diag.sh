#!/usr/bin/env bash
# Diagnoses the integer-formatting segfault seen on the GPU machine (CPU-only builds suffice: the crash does
# not depend on the CUDA sources). For the current setup.py and for a variant linked with
# -Wl,--no-as-needed it prints the link line, the shared libraries _C.so needs, where its locale and
# ostream symbols bind at run time, and whether the bad-input probes crash. Usage: bash scripts/gpu_segv_diag.sh
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
exec > >(tee "$OUT/diag.log") 2>&1
probe() {
  for c in scan_rank conv_rank; do timeout 60 python3 scripts/segv_probe.py $c 2>&1 | tail -1; done
}
build_and_probe() {
  rm -rf build mamba_ext/_C*.so
  USE_CUDA=0 MAX_JOBS=16 python3 -m pip install -v --no-build-isolation --no-deps -e . >"$OUT/build_$1.log" 2>&1
  echo "=== $1: build exit $?"
  grep -- "-shared" "$OUT/build_$1.log" | tail -1 | tr ' ' '\n' | grep -E "^-[lW]|as-needed|static|visib" | tr '\n' ' '; echo
  readelf -d mamba_ext/_C*.so | grep NEEDED
  nm -C mamba_ext/_C*.so | grep -E "_M_insert<long>|locale::id|::id$" | head
  LD_DEBUG=bindings python3 scripts/segv_probe.py scan_rank 2>&1 | grep "mamba_ext/_C" | grep -E "_M_insertIl|2idE|ostringstream|basic_ios" | head -8
  probe
}
build_and_probe current
sed -i 's/extra_link_args=\["-fopenmp"\]/extra_link_args=["-fopenmp", "-Wl,--no-as-needed"]/' setup.py
grep -c no-as-needed setup.py
build_and_probe no_as_needed
git checkout setup.py
