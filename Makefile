# vte-proxy — `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= gateway.yaml.example
PORT   ?= 8050
# The example config's key sk-demo is public: `make run` listens on loopback unless told otherwise.
HOST   ?= 127.0.0.1
IMAGE  ?= vte-proxy:latest
# podman only: `stand-in` builds the base locally (no registry needed); `registry` pulls it.
BASE   ?= stand-in
# podman settings for hosts without a Docker engine (runc, cgroupfs, host-sized ulimits).
export CONTAINERS_CONF ?= $(CURDIR)/deploy/podman/containers.conf

.DEFAULT_GOAL := help
.PHONY: help venv dev run test debs lint schema helm-lint image image-base docker bench bench-smoke clean claude-code

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# Two stamps: serving needs only the runtime dependencies (seconds to install); the tests,
# linters and deployment checks need the dev extras on top (minutes).
$(VENV)/.runtime: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements.lock -e .
	@touch $@

$(VENV)/.dev: $(VENV)/.runtime
	$(BIN)/pip install -q -c requirements.lock -e '.[dev]'
	@touch $@

venv: $(VENV)/.dev ## create .venv and install the project with its dev tools (same as `make dev`)

dev: $(VENV)/.dev ## install the dev extras (tests, linters, Helm and image checks) into .venv

run: $(VENV)/.runtime ## serve gateway.yaml.example on 127.0.0.1:8050 (runtime deps only; HOST=0.0.0.0 to expose it)
	$(BIN)/vte-proxy serve --config $(CONFIG) --host $(HOST) --port $(PORT)

# Debian packages the tests use: chromium (browser tests), libjemalloc2 (the image's allocator),
# redis-server (limits tests), podman & co. (the image built and run), prometheus (brings
# promtool: scraping, dashboard queries, alert unit tests); nodejs+npm (JS SDK tests) when npm
# is missing (NodeSource's nodejs brings its own npm).
DEBS := chromium libjemalloc2 redis-server podman runc buildah debootstrap uidmap slirp4netns fuse-overlayfs \
        prometheus

test: venv ## run the test suite (installs the dev extras, and the Debian packages below if missing)
	@command -v chromium >/dev/null 2>&1 && ls /usr/lib/*/libjemalloc.so.2 >/dev/null 2>&1 \
	  && command -v podman >/dev/null 2>&1 && command -v runc >/dev/null 2>&1 \
	  && command -v debootstrap >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 \
	  && command -v redis-server >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 \
	  || $(MAKE) --no-print-directory debs
	$(BIN)/python -m pytest -q -rs

debs: ## install the Debian packages the tests use (chromium, libjemalloc2, redis-server, podman, prometheus, npm...)
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBS) >/dev/null
	@command -v npm >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null

claude-code: ## install the pinned Claude Code (npm) for its end-to-end test (the test also does it)
	scripts/install_claude_code.sh

lint: venv ## ruff and mypy --strict
	$(BIN)/ruff check vte_proxy tests bench
	$(BIN)/mypy

schema: venv ## write gateway.schema.json (for yaml-language-server)
	$(BIN)/vte-proxy schema > gateway.schema.json

helm-lint: venv ## tests/deploy: chart, dashboard, Dockerfile, the image run, Prometheus, alerts
	$(BIN)/python -m pytest -q tests/deploy

image: ## build the image: docker with a running engine, else podman (local stand-in base; BASE=registry pulls)
	@if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then \
	  echo "docker build -t $(IMAGE) ."; docker build -t $(IMAGE) .; \
	elif [ "$(BASE)" = registry ]; then \
	  echo "podman build --format docker -t $(IMAGE) ."; podman build --format docker -t $(IMAGE) .; \
	else \
	  $(MAKE) --no-print-directory image-base && \
	  echo "podman build --format docker --pull=never -t $(IMAGE) ." && \
	  podman build --format docker --pull=never -t $(IMAGE) .; \
	fi

image-base: ## podman: build the Dockerfile's base image locally (debootstrap; cached, FORCE=1 rebuilds)
	scripts/image-base.sh

docker: image ## alias of `make image`

bench: venv ## vte-proxy, nginx, LiteLLM and Portkey side by side (~35 min; BENCH_ARGS=...); not in `make test`
	$(BIN)/python bench/run.py $(BENCH_ARGS)

bench-smoke: venv ## every cell of `make bench` with tiny durations (~5 min): the harness works, no figures
	$(BIN)/python bench/run.py --smoke --json bench/results/smoke.json --chart bench/results/smoke.png

clean: ## remove the venv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
