# wsredis: build, test, run. `make help` lists the targets.
SHELL := /bin/bash
CARGO ?= cargo
BIN := target/release/wsredis
PORT ?= 8000
WORKERS ?= $(shell nproc)

.PHONY: help deps deps-deploy deps-django build test lint unit chaos run-standalone run-behind-nginx bench-http stress stress-nginx profile fuzz conformance clean

help:
	@echo "make run-standalone  build and start the server on :$(PORT) (all set-up included)"
	@echo "make run-behind-nginx  Redis, an HTTP pool and a websocket pool behind nginx on :8080"
	@echo "make test            install what tests need (chromium included), lint, run every test"
	@echo "make chaos           the faults-under-load tests at full size (CHAOS_SOCKETS=$(CHAOS_SOCKETS)), then fuzzing"
	@echo "make build           release build"
	@echo "make lint            cargo fmt --check and clippy -D warnings"
	@echo "make bench-http      wrk against /healthz with 1 and N workers, and respawn latency"
	@echo "make stress          seed, seed-live, fanout, sweep and throughput (vs plain TCP), idle, recovery; results in stress/results/"
	@echo "make profile         perf and a flamegraph of a 10,000-subscriber fan-out; stress/results/profile/"
	@echo "make stress-nginx    the same scenarios through NGINX; results in stress/results/nginx/"
	@echo "make fuzz            every fuzz target in fuzz/ for FUZZ_SECONDS (30) each (cargo-fuzz, nightly)"
	@echo "make conformance     the Autobahn websocket testsuite against the server (Python 2 via pip)"

deps:
	@scripts/ensure-deps.sh chromium

build: deps
	$(CARGO) build --release --locked

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

unit:
	$(CARGO) test --workspace --locked

test: deps deps-deploy deps-django lint unit

# The faults-under-load tests of `make test` (server/tests/chaos*.rs: 2000 sockets, 100 reloads)
# at full size, one test at a time, with their numbers printed; then scripts/fuzz.sh if present.
CHAOS_SOCKETS ?= 8000
CHAOS_CYCLES ?= 300
CHAOS_RATE ?= 20
CHAOS_OUTAGE_SECS ?= 10
chaos:
	CHAOS_SOCKETS=$(CHAOS_SOCKETS) CHAOS_CYCLES=$(CHAOS_CYCLES) CHAOS_RATE=$(CHAOS_RATE) \
	CHAOS_OUTAGE_SECS=$(CHAOS_OUTAGE_SECS) $(CARGO) test -p wsredis --locked \
	  --test chaos --test chaos_reload --test chaos_consumers -- --nocapture --test-threads 1
	@if [ -x scripts/fuzz.sh ]; then scripts/fuzz.sh 60; else echo "chaos: no scripts/fuzz.sh, fuzzing skipped"; fi

# What the deployment tests (server/tests/deploy_*.rs) need besides redis-server; a test whose
# tool cannot be installed says so and skips.
deps-deploy:
	@scripts/ensure-deps.sh nginx promtool || echo "deps-deploy: could not install nginx/promtool; those tests will skip" >&2

# The private virtualenv with the real Django stack of server/tests/django.rs (cached under
# target/django-venv); without python3-venv or PyPI those tests say so and skip.
deps-django:
	@scripts/django-venv.sh >/dev/null || echo "deps-django: could not build the Django virtualenv; server/tests/django.rs will skip" >&2

run-standalone: build
	BIN=$(BIN) PORT=$(PORT) WORKERS=$(WORKERS) scripts/run-standalone.sh

run-behind-nginx: build
	@scripts/ensure-deps.sh nginx
	exec scripts/run-behind-nginx.sh

bench-http: build
	@scripts/ensure-deps.sh wrk
	scripts/bench-http.sh

STRESS := target/release/wsredis-stress
STRESS_OUT ?= stress/results
# The open-files limit is per process: past it, `idle` splits the sockets over child processes
# of the tool and starts enough workers that each holds at most 3/4 of the limit.
IDLE_SOCKETS ?= 50000
STRESS_ARGS = --server-bin $(BIN) --out $(STRESS_OUT)

# Each scenario starts its own redis-server and server (one worker per CPU) and exits
# non-zero if anything was lost, which stops the target.
stress: deps
	$(CARGO) build --release --locked -p wsredis -p wsredis-stress
	$(STRESS) seed $(STRESS_ARGS)
	$(STRESS) seed-live $(STRESS_ARGS)
	$(STRESS) fanout $(STRESS_ARGS) -n 10000 -m 100 -r 10
	$(STRESS) sweep $(STRESS_ARGS) --sizes 1000,2500,5000,10000 -m 50 -r 10
	$(STRESS) throughput $(STRESS_ARGS) --publisher redis -d 10 --baseline
	$(STRESS) throughput $(STRESS_ARGS) --name throughput-ws -d 5 --baseline
	$(STRESS) idle $(STRESS_ARGS) -n $(IDLE_SOCKETS) --hold 5
	$(STRESS) recovery $(STRESS_ARGS) -n 5000 -d 10 -r 20

# perf + flamegraph of a 10,000-subscriber fan-out: stress/results/profile/.
profile: deps
	$(CARGO) build --release --locked -p wsredis -p wsredis-stress
	STRESS_OUT=$(STRESS_OUT) stress/profile.sh $(BIN) $(STRESS)

stress-nginx: deps
	$(CARGO) build --release --locked -p wsredis -p wsredis-stress
	STRESS_OUT=$(STRESS_OUT) stress/nginx.sh $(BIN) $(STRESS)

# Coverage-guided fuzzing of the parsers of outside input (fuzz/, its own workspace); the
# committed corpus also runs in `make test` (server/tests/fuzz_corpus.rs).
FUZZ_SECONDS ?= 30
fuzz:
	scripts/fuzz.sh $(FUZZ_SECONDS)

conformance:
	scripts/conformance.sh

clean:
	$(CARGO) clean
	rm -rf var
