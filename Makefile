# Two commands for users: `make report` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
READY := $(VENV)/.ready
# One thread: deterministic zoo builds, and much faster than two on a busy 2-core machine.
export OMP_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM := false

.PHONY: report test zoo bench clean-zoo

$(READY): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements.txt
	touch $(READY)

zoo: $(READY)
	$(BIN)/python -m fixtures.zoo

# Every claim on every available subject; refuted claims are findings, so only a broken run fails.
report: zoo
	$(BIN)/python -m pytest claims -q --report-dir reports; \
	status=$$?; [ $$status -le 1 ] || exit $$status
	@echo "report: reports/claims.html, reports/claims.md, reports/claims.json"

# The lib's own tests and every claim on the zoo subjects; any failure fails.
test: zoo
	$(BIN)/python -m pytest tests claims --origin zoo

bench: $(READY)
	$(BIN)/python -m pytest benchmarks --benchmark-only --benchmark-json=.benchmarks/latest.json -q
	$(BIN)/python benchmarks/speedup.py .benchmarks/latest.json

clean-zoo:
	rm -rf .cache/zoo
