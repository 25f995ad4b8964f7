#!/usr/bin/env bash
# Makes build/serve-venv: the interpreter `careg-edge serve` runs in.
#
# PyTriton (nvidia-pytriton, which ships the Triton server binary) needs numpy<2,
# while the project's .venv has numpy 2, so serving lives in its own venv:
# careg-edge installed editable without its dependencies (its C++ core built
# here, into build/serve-core, so the .venv's build is never touched), then
# numpy<2, ONNX Runtime, OpenCV, Pillow, PyTriton and tritonclient[http] from
# the registry. No torch: serving runs the encoder with ONNX Runtime.
#
#   bench/make_serve_venv.sh            (or: make serve-venv)
#   SERVE_VENV=/elsewhere PY=python3.11 bench/make_serve_venv.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${SERVE_VENV:-build/serve-venv}
PY=${PY:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
VPY="$VENV/bin/python"
pipi() { "$VPY" -m pip install -q -c constraints.txt "$@"; }
pipi --upgrade pip
# opencv-python-headless from 4.12 on requires numpy>=2: the resolver picks one below.
pipi "numpy<2" onnxruntime "opencv-python-headless>=4.8" "pillow>=9" "click>=8.1" \
     "threadpoolctl>=3" "nvidia-pytriton>=0.7,<0.8" "tritonclient[http]" \
     scikit-build-core pybind11 "paho-mqtt>=2.0,<3" "asyncua>=1.1"
pipi --no-deps --no-build-isolation -e . --config-settings=build-dir=build/serve-core
# PyTriton's server binary links libpython: `careg-edge serve` sets LD_LIBRARY_PATH
# from sysconfig's LIBDIR itself; this check does the same.
LIBDIR=$("$VPY" -c "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))")
LD_LIBRARY_PATH="$LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$VPY" -c "
import numpy, pytriton, tritonclient.http, careg_edge._core as c
assert numpy.__version__ < '2', numpy.__version__
print('serve venv ready: numpy', numpy.__version__, '| core', c.build_flags())"
