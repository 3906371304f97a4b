# wsredis: build, test, run. `make help` lists the targets.
SHELL := /bin/bash
CARGO ?= cargo
BIN := target/release/wsredis
PORT ?= 8000
WORKERS ?= $(shell nproc)

.PHONY: help deps deps-deploy deps-django build test lint unit run-standalone run-behind-nginx bench-http clean

help:
	@echo "make run-standalone  build and start the server on :$(PORT) (all set-up included)"
	@echo "make run-behind-nginx  Redis, an HTTP pool and a websocket pool behind nginx on :8080"
	@echo "make test            install what tests need, then lint and run every test"
	@echo "make build           release build"
	@echo "make lint            cargo fmt --check and clippy -D warnings"
	@echo "make bench-http      wrk against /healthz with 1 and N workers, and respawn latency"

deps:
	@scripts/ensure-deps.sh

build: deps
	$(CARGO) build --release --locked

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

unit:
	$(CARGO) test --workspace --locked

test: deps deps-deploy deps-django lint unit

# What the deployment tests (server/tests/deploy_*.rs) need besides redis-server; a test whose
# tool cannot be installed says so and skips.
deps-deploy:
	@scripts/ensure-deps.sh nginx promtool || echo "deps-deploy: could not install nginx/promtool; those tests will skip" >&2

# The private virtualenv with the real Django stack of server/tests/django.rs (cached under
# target/django-venv); without python3-venv or PyPI those tests say so and skip.
deps-django:
	@scripts/django-venv.sh >/dev/null || echo "deps-django: could not build the Django virtualenv; server/tests/django.rs will skip" >&2

run-standalone: build
	@mkdir -p var
	exec $(BIN) serve --bind 127.0.0.1:$(PORT) --workers $(WORKERS)

run-behind-nginx: build
	@scripts/ensure-deps.sh nginx
	exec scripts/run-behind-nginx.sh

bench-http: build
	@scripts/ensure-deps.sh wrk
	scripts/bench-http.sh

clean:
	$(CARGO) clean
	rm -rf var
