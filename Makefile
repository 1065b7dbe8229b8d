# Two commands on a fresh clone: `make demo` (the main job) and `make test` (the suite).
# Each creates .venv at the repo root on first use and reuses it afterwards. The suite runs on
# both cores (pytest-xdist).
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m cutmix_train.demo

test: $(STAMP)
	$(PY) -m pytest -q -n 2

bench: $(STAMP)
	$(PY) bench/op.py
	$(PY) bench/op_sample.py
	$(PY) bench/train.py
	$(PY) bench/write_shards.py
