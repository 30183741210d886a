# The two commands of the README:  `make run`  (install + main job)  and  `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(abspath $(VENV))/bin:$(PATH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install run test lint ui

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# CPU torch first: a bare torch requirement would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	# Federated extra without its over-tight pins (see pyproject.toml).
	$(PY) -m pip install -q --no-deps flwr==1.42.0 ray==2.55.1 tenseal==0.3.18
	# ...but with flwr's own bounds for the runtime dependencies it does need.
	$(PY) -m pip install -q "grpcio>=1.70,<2" "grpcio-health-checking>=1.70,<2" \
		"iterators>=0.0.2,<0.0.3" "pycryptodome>=3.18,<4" "tomli>=2.0.1,<3" "tomli-w>=1,<2" \
		msgpack jsonschema
	touch $@

install: $(VENV)/.installed

run: install
	medsec data init
	dvc add -q data   # (re)caches data/; data.dvc is unchanged when the phantoms match it
	dvc repro

test: install
	lint-imports --no-cache   # the layering contract in pyproject.toml
	pytest -q

lint: install
	ruff check .

ui: install
	medsec ui
