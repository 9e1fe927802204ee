# The README's two commands: `make run` (main job on the embedded default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/ml100k
CONFIG ?= configs/ml100k.py

.PHONY: install install-test run smoke test

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# CPU torch first, from the locally served wheel, so nothing pulls a CUDA build.
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

run: install
	$(PY) -m gream_jax.main --config=$(CONFIG) --workdir=$(WORKDIR)

smoke: install
	$(PY) -m gream_jax.main --config=$(CONFIG):smoke --workdir=runs/smoke

# pytest exits 5 when it collects nothing: treat that as a failure too (it means tests went missing).
test: install
	$(PY) -m pytest -q -ra tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc
