# Two entry points: `make demo` and `make test`. Each sets up its own virtualenv.
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch first: this pin takes the CPU wheel already on disk; an unpinned torch pulls a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: install test test-slow test-all demo bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m "not slow" -q

test-slow: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m "slow" -q

test-all: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(VENV)/bin/mllmrec demo

bench: $(STAMP)
	$(PY) benchmarks/graph_build.py

clean:
	rm -rf $(VENV) build *.egg-info
