# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# What `make demo` needs (the runtime), and what the tests and the linters need on top of it.
RUNTIME := $(VENV)/.installed-runtime
DEV     := $(VENV)/.installed-dev
DEMO_INDEX ?= .demo-index

.PHONY: install demo test test-fast lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(RUNTIME): $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install --quiet -e .
	touch $(RUNTIME)

$(DEV): $(RUNTIME)
	$(PY) -m pip install --quiet -e '.[test,dev]'
	touch $(DEV)

install: $(DEV)

demo: $(RUNTIME)
	$(VENV)/bin/vsearch build-index sample_images --index-dir $(DEMO_INDEX)
	$(VENV)/bin/vsearch query sample_images/chelsea.jpg --index-dir $(DEMO_INDEX) --k 5
	$(VENV)/bin/vsearch evaluate --groups sample_images/groups.csv --index-dir $(DEMO_INDEX)

test: $(DEV)
	$(PY) -m pytest -q -rs

# The edit-test loop: everything but the tests that load the real default model (marked slow).
test-fast: $(DEV)
	$(PY) -m pytest -q -m "not slow" -n auto

# Style, the import contracts of .importlinter (every import runs down the layers), and types.
lint: $(DEV)
	$(VENV)/bin/ruff check vsearch tests benchmarks
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy vsearch

bench: $(DEV)
	$(PY) benchmarks/bench_embed.py
	$(PY) benchmarks/bench_search.py

clean:
	rm -rf $(DEMO_INDEX) .pytest_cache .mypy_cache build *.egg-info
