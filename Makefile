# The two commands of the README: `make demo` and `make test`. Both set up .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test bench lint typecheck docs mutate clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/headrace replay --data data/demo/bittrex --run-id demo
	$(VENV)/bin/headrace positions --run-id demo
	@echo 'rows of run "demo" are in state/clickhouse; next: .venv/bin/headrace runs, .venv/bin/headrace db query "SELECT ..." (docs/onboarding.md)'

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	@for f in benchmarks/bench_*.py; do echo "# $$f"; $(PY) $$f || exit 1; done

lint: $(STAMP)
	$(VENV)/bin/ruff check headrace operators flows sources sinks tests benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy headrace operators flows sources sinks

docs: $(STAMP)
	$(PY) -m headrace.docgen

# plant one plausible bug at a time in operators/, sources/, sinks/ (in a temp copy) and report which the tests miss
MUTANTS ?= 60
SEED    ?= 1
mutate: $(STAMP)
	$(PY) tests/mutate.py --max-mutants $(MUTANTS) --seed $(SEED)

clean:
	rm -rf state .pytest_cache
