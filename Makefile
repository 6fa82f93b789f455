# The two commands of the README: `make demo` and `make test`. Both set up .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test bench lint typecheck docs mutate clean

# Installs with uv when it can be had (already on PATH, or `pip install uv` into the venv: seconds instead of a
# minute), else with pip, so a fresh `make demo` reaches its first summary quickly.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if command -v uv >/dev/null 2>&1 || $(PY) -m pip install --quiet uv >/dev/null 2>&1; then \
		UV=$$(command -v uv || echo $(VENV)/bin/uv); echo "installing with $$UV"; \
		$$UV pip install --quiet -p $(PY) -e '.[dev]' || $(PY) -m pip install --quiet -e '.[dev]'; \
	else \
		echo "uv not available: installing with pip"; \
		$(PY) -m pip install --quiet --upgrade pip && $(PY) -m pip install --quiet -e '.[dev]'; \
	fi
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/headrace replay --data data/demo/bittrex --run-id demo
	$(VENV)/bin/headrace positions --run-id demo
	@echo 'rows of run "demo" are in state/clickhouse; next: .venv/bin/headrace runs, .venv/bin/headrace db query "SELECT ..." (docs/onboarding.md)'

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist worksteal

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
