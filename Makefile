# Everything a fresh clone needs is installed by these targets (Python >= 3.11 required).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "terminus needs Python >= 3.11")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/terminus demo

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not postgres"

bench: $(STAMP)
	$(PY) bench/intentions.py
	$(PY) bench/api_upserts.py
	$(PY) bench/identity.py
	$(PY) bench/rbac_size.py
	$(PY) bench/xds_push.py
	$(PY) bench/dataplane.py  # needs wrk (apt-get install wrk)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
