# wsredis: build, test, run. `make help` lists the targets.
SHELL := /bin/bash
CARGO ?= cargo
BIN := target/release/wsredis
PORT ?= 8000
WORKERS ?= $(shell nproc)

.PHONY: help deps build test lint unit run-standalone bench-http clean

help:
	@echo "make run-standalone  build and start the server on :$(PORT) (all set-up included)"
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

test: deps lint unit

run-standalone: build
	BIN=$(BIN) PORT=$(PORT) WORKERS=$(WORKERS) scripts/run-standalone.sh

bench-http: build
	@scripts/ensure-deps.sh wrk
	scripts/bench-http.sh

clean:
	$(CARGO) clean
	rm -rf var
