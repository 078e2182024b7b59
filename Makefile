# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEMO_INDEX ?= .demo-index

.PHONY: install demo test test-fast lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vsearch build-index sample_images --index-dir $(DEMO_INDEX)
	$(VENV)/bin/vsearch query sample_images/chelsea.jpg --index-dir $(DEMO_INDEX) --k 5
	$(VENV)/bin/vsearch evaluate --groups sample_images/groups.csv --index-dir $(DEMO_INDEX)

test: $(STAMP)
	$(PY) -m pytest -q -rs

# The edit-test loop: everything but the tests that load the real default model (marked slow).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" -n auto

lint: $(STAMP)
	$(VENV)/bin/ruff check vsearch tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/bench_embed.py
	$(PY) benchmarks/bench_search.py

clean:
	rm -rf $(DEMO_INDEX) .pytest_cache build *.egg-info
