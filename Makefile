# The README's two commands are `make run` and `make test`; the rest are helpers.
.PHONY: run test install lint typecheck check pytest bench chaos clean

VENV := .venv
BIN := $(VENV)/bin

# Short simulated jobs for a person trying it out (the real scenario is 10-120 s).
# Loopback only, as the README says; HOST=0.0.0.0 make run opens it to the network.
RUN_ENV := HOST=$${HOST:-127.0.0.1} \
	DOWNLOAD_DELAY_MIN_MS=$${DOWNLOAD_DELAY_MIN_MS:-4000} \
	DOWNLOAD_DELAY_MAX_MS=$${DOWNLOAD_DELAY_MAX_MS:-12000} \
	LOG_FORMAT=$${LOG_FORMAT:-text}

run:  ## create .venv, install, serve on embedded defaults; prints the page's URL (http://127.0.0.1:3000/)
	@bash .ci/venv
	$(RUN_ENV) $(BIN)/delineate serve

test: install check pytest  ## install everything the tests need, lint, type-check, run the suite

install:
	@bash .ci/install

check: lint typecheck

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/mypy

# worksteal: an idle worker takes half of the other's queue, so a few long tests (the chaos
# and bench runs) do not leave one worker waiting at the end.
pytest:  ## the suite on PYTEST_WORKERS (2) processes; the slowest tests listed at the end
	CI=$${CI:-true} $(BIN)/pytest -n $${PYTEST_WORKERS:-2} --dist worksteal --durations=15

bench:  ## Delineate vs python-socketio vs broadcaster, fan-out + idle sockets on loopback; table + JSON
	@bash .ci/install
	$(BIN)/python bench/run.py

chaos:  ## fault-injection soak (docs/guarantees.md): CHAOS_TRIALS (500), CHAOS_SEED, CHAOS_REDIS (single|cluster|sentinel); JSON summary
	@bash .ci/venv test
	CHAOS_TRIALS=$${CHAOS_TRIALS:-500} $(BIN)/python -m tests.chaos.harness

clean:
	rm -rf $(VENV) .cache data test-artifacts .pytest_cache .mypy_cache .ruff_cache
