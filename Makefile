# The two commands of the README: `make run` (the main job on the embedded default) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: run serve test lint docs test-postgres fuzz fuzz-quick bench chaos stop clean

# setup.py builds the C extensions (customs/pki/gost/_hashes.c): a change to either rebuilds them with the install.
$(STAMP): pyproject.toml setup.py $(wildcard customs/pki/gost/*.c)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/customs demo

serve: $(STAMP)
	$(BIN)/customs serve

test: lint docs fuzz-quick
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The code's own checks: lint, format, and the import-linter layer contracts (pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# The documentation site (mkdocs.yml, docs/): built into site/, the reference pages generated from the code
# (docs/hooks/reference.py); --strict makes a broken link or a missing description fail `make test`.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --quiet

test-postgres: $(STAMP)
	CUSTOMS_TEST_POSTGRES_URL=$${CUSTOMS_TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/test} CUSTOMS_REQUIRE_POSTGRES=1 \
		$(BIN)/python -m pytest -m postgres $(PYTEST_ARGS)

# Fuzzing (tests/fuzz, docs/how-to/fuzzing.md): schemathesis against the intake API, hypothesis against the document
# parser and the submission path; the generated inputs are counted and printed at the end, and a run with fewer
# than CUSTOMS_FUZZ_MIN_INPUTS fails. CUSTOMS_FUZZ_SCALE multiplies every test's examples (0.1: a quick look, with
# CUSTOMS_FUZZ_MIN_INPUTS=0); CUSTOMS_FUZZ_SEED repeats schemathesis's requests.
CUSTOMS_FUZZ_MIN_INPUTS ?= 10000
fuzz: $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,fuzz]'
	CUSTOMS_FUZZ_MIN_INPUTS=$(CUSTOMS_FUZZ_MIN_INPUTS) $(BIN)/python -m pytest -m fuzz tests/fuzz $(PYTEST_ARGS)

# The short pass `make test` runs (and so CI, .ci/run): every fuzz test at a tenth of its inputs (about 2,000, half
# a minute), so a new route or a changed answer that breaks them fails at once instead of rotting until `make fuzz`.
# At least 1,000 inputs: a pass that quietly ran nothing fails too.
fuzz-quick: $(STAMP)
	CUSTOMS_FUZZ_SCALE=0.1 CUSTOMS_FUZZ_MIN_INPUTS=1000 $(BIN)/python -m pytest -m fuzz tests/fuzz -q

bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python bench/signatures.py
	$(BIN)/python bench/official_acts.py
	$(BIN)/python bench/outbox.py
	$(BIN)/python bench/recheck.py
	$(BIN)/python bench/clearance.py

# The fault-injection suite (docs/how-to/fault-injection.md): 20-40 minutes, root needed (a tmpfs, a private PostgreSQL cluster run as
# postgres); not part of `make test`. CHAOS_ARGS, e.g. "--only prefect-kill,db-30s -n 30".
chaos: $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	$(BIN)/python bench/chaos.py $(CHAOS_ARGS)

stop: $(STAMP)
	$(BIN)/customs server stop

clean:
	rm -rf $(VENV) data .pytest_cache site
