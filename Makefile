# wsredis: build, test, run. `make help` lists the targets.
SHELL := /bin/bash
CARGO ?= cargo
BIN := target/release/wsredis
PORT ?= 8000
WORKERS ?= $(shell nproc)

.PHONY: help deps deps-deploy build test lint unit run-standalone run-behind-nginx bench-http clean

help:
	@echo "make run-standalone  build and start the server on :$(PORT) (all set-up included)"
	@echo "make run-behind-nginx  Redis, an HTTP pool and a websocket pool behind nginx on :8080"
	@echo "make test            install what tests need (chromium included), lint, run every test"
	@echo "make build           release build"
	@echo "make lint            cargo fmt --check and clippy -D warnings"
	@echo "make bench-http      wrk against /healthz with 1 and N workers, and respawn latency"

deps:
	@scripts/ensure-deps.sh chromium

build: deps
	$(CARGO) build --release --locked

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

unit:
	$(CARGO) test --workspace --locked

test: deps deps-deploy lint unit

# What the deployment tests (server/tests/deploy_*.rs) need besides redis-server; a test whose
# tool cannot be installed says so and skips.
deps-deploy:
	@scripts/ensure-deps.sh nginx promtool || echo "deps-deploy: could not install nginx/promtool; those tests will skip" >&2

run-standalone: build
	BIN=$(BIN) PORT=$(PORT) WORKERS=$(WORKERS) scripts/run-standalone.sh

run-behind-nginx: build
	@scripts/ensure-deps.sh nginx
	exec scripts/run-behind-nginx.sh

bench-http: build
	@scripts/ensure-deps.sh wrk
	scripts/bench-http.sh

clean:
	$(CARGO) clean
	rm -rf var
