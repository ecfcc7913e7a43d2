# Two commands for users: `make report` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
READY := $(VENV)/.ready
# One thread: deterministic, and much faster than two on a busy 2-core machine.
export OMP_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM := false
# Another CPU's floating point, simulated: the kernels torch and MKL pick on a machine without AVX.
OTHER_CPU := ATEN_CPU_CAPABILITY=default MKL_CBWR=COMPATIBLE

.PHONY: report test zoo zoo-rebuild repro bench clean-cache

$(READY): requirements.txt constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -r requirements.txt -c constraints.txt
	touch $(READY)

# Verifies the shipped zoo against its manifests (seconds); never trains.
zoo: $(READY)
	$(BIN)/python -m fixtures.zoo

# Retrains the zoo (or NAME=...) from its recipes into .cache/zoo-rebuild and compares: metrics, weights,
# and which registered verdicts the rebuilt models reproduce. Add SHIP=1 to replace the shipped models.
zoo-rebuild: $(READY)
	$(BIN)/python -m fixtures.zoo --rebuild $(NAME) $(if $(SHIP),--ship)

# Every claim on every available subject; refuted claims are findings, so only a broken run fails.
report: zoo
	$(BIN)/python -m pytest claims -q -n auto --report-dir reports; \
	status=$$?; [ $$status -le 1 ] || exit $$status
	@echo "report: reports/claims.html, reports/claims.md, reports/claims.json"

# The linter, the lib's own tests and every claim on the zoo subjects; any failure fails.
test: zoo
	$(BIN)/ruff check .
	$(BIN)/python -m pytest tests claims --origin zoo -n auto

# The zoo claims under this CPU's kernels and under another CPU's, each with its own cache of trained
# artefacts; fails if any row's verdict differs.
repro: zoo
	rm -rf reports/repro-native reports/repro-other-cpu .cache/repro-native .cache/repro-other
	CLAIMS_CACHE_DIR=.cache/repro-native $(BIN)/python -m pytest claims --origin zoo -q -n auto --tb=no \
		--report-dir reports/repro-native; true
	$(OTHER_CPU) CLAIMS_CACHE_DIR=.cache/repro-other $(BIN)/python -m pytest claims --origin zoo -q -n auto --tb=no \
		--report-dir reports/repro-other-cpu; true
	$(BIN)/python -m fixtures.verdicts reports/repro-native/claims.json reports/repro-other-cpu/claims.json

# The patching sweeps against transformer_lens.patching, then every claim family at the published subjects'
# shapes against its time and memory budget (the table; about 40 minutes), then the speedup line, last.
bench: $(READY)
	$(BIN)/python -m pytest benchmarks --benchmark-only --benchmark-json=.benchmarks/latest.json -q
	$(BIN)/python -m benchmarks.scale; status=$$?; \
	$(BIN)/python benchmarks/speedup.py .benchmarks/latest.json && exit $$status

clean-cache:
	rm -rf .cache
