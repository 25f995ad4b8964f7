# Shared by bench/gpu_check.sh and bench/gpu_train.sh (sourced from the repository
# root, not run): the variables both use and what a bare CUDA machine needs before
# either can start. Each script sets its own OUT default before sourcing this.
REPO=$PWD
PY=${PYTHON:-python3}
CARRY=${CAREG_GPU_CARRY:-$REPO/build/gpu-carry}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# carried Python packages the machine lacks go first on the path
if [ -d "$CARRY/site" ]; then export PYTHONPATH="$CARRY/site${PYTHONPATH:+:$PYTHONPATH}"; fi

step() { echo; echo "== $(date -u +%H:%M:%S) $*"; }

# One line each on the GPU, torch, nvcc and the commit being run.
describe_machine() {
  nvidia-smi -L 2>&1 || echo "nvidia-smi: not found"
  "$PY" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__,
'| cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
  (nvcc --version 2>/dev/null | tail -n 1) || echo "nvcc: not found"
  echo "commit $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$REPO" diff --quiet 2>/dev/null || echo ' (with local changes)')"
}

# pip --no-deps --no-build-isolation --no-index: nothing is downloaded; the tree may
# carry another machine's build folder, so the build goes to a fresh one.
install_checkout() {
  local t0=$SECONDS
  if ! "$PY" -m pip install -q --no-deps --no-build-isolation --no-index \
        --config-settings=build-dir=/tmp/careg-gpu-build "$REPO"; then
    echo "FAILED: pip install (needs scikit-build-core, pybind11, CMake and a C++ compiler)"
    return 1
  fi
  echo "installed in $((SECONDS - t0)) s"
}
