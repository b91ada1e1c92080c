# One command to install and run the main job, one to install and run the tests.
#   make demo    -> .venv + `mirage demo memory`  (video + plot in out/demo_memory/)
#   make test    -> .venv + ruff + pytest
#   make bench   -> .venv + `mirage bench memory` (figures in out/bench_memory.json)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test bench clean

install: $(VENV)/.installed

# torch is installed first and pinned: on CPU machines torch==2.13.0 is a local CPU wheel;
# any other spec would pull several GB of CUDA packages.
$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -e ".[demo,test]"
	touch $@

demo: install
	$(BIN)/mirage demo memory --out out/demo_memory

test: install
	$(BIN)/ruff check .
	$(BIN)/pytest -q

bench: install
	$(BIN)/mirage bench memory --json out/bench_memory.json

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
