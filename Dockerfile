# syntax=docker/dockerfile:1
#
# vte-proxy container image.
#
#   docker build -t vte-proxy .
#   docker run --rm -p 8050:8050 --read-only --tmpfs /tmp \
#     -v "$PWD/config:/etc/vte-proxy:ro" -e VTE_DEMO_KEY=change-me vte-proxy
#
# Mount the config DIRECTORY (not the single file): the gateway watches the directory,
# so edits and Kubernetes ConfigMap updates are hot-reloaded.
# See docs/deployment.md.

############################
# Stage 1: build a self-contained virtualenv in /opt/venv
############################
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

RUN python -m venv /opt/venv
ENV PATH="/opt/venv/bin:${PATH}"

WORKDIR /build

# 1) Locked runtime dependencies first: this layer is cached until requirements.lock
#    changes, so source edits do not reinstall them. --no-deps + `pip check` means the
#    lock must be complete: nothing unpinned can sneak in.
COPY requirements.lock ./
RUN pip install --no-cache-dir --no-deps --requirement requirements.lock \
 && pip check

# 2) The package itself, without dependencies (they are already installed from the lock).
#    README.md* : the package metadata reads README.md when present; the wildcard keeps the
#    build working without it (BuildKit accepts a pattern that matches nothing).
COPY pyproject.toml README.md* ./
COPY vte_proxy ./vte_proxy
RUN pip install --no-cache-dir --no-deps . \
 && pip check \
 && python -m compileall -q /opt/venv/lib

############################
# Stage 2: runtime
############################
FROM python:3.11-slim AS runtime

LABEL org.opencontainers.image.title="vte-proxy" \
      org.opencontainers.image.description="Declarative, hot-reloading, OpenAI-compatible LLM API gateway" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"

# A numeric, non-root user (Kubernetes runAsNonRoot can verify a numeric UID only).
RUN groupadd --system --gid 10001 vte \
 && useradd --system --no-log-init --uid 10001 --gid 10001 \
      --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin vte

# jemalloc: gives memory back to the OS after a burst of streams. Python's own allocator keeps
# every 1 MiB arena that still holds one live object, so after 1,000 streams the process stayed
# at its peak; with jemalloc (and PYTHONMALLOC=malloc so small objects use it too) it returns
# to within ~10 MB of idle, at the same speed. See docs/performance.md, "Memory".
# The symlink gives LD_PRELOAD one path on every architecture. Not version-pinned (DL3008):
# the package follows the Debian release under python:3.11-slim, as its other libraries do.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libjemalloc2 \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s "$(find /usr/lib -name libjemalloc.so.2 | head -n 1)" /usr/local/lib/libjemalloc.so.2 \
 && test -e /usr/local/lib/libjemalloc.so.2

COPY --from=builder /opt/venv /opt/venv

# Read-only root filesystem friendly: no .pyc writes at run time (bytecode was compiled
# in the builder), unbuffered logs, only /tmp needs to be writable.
# PROMETHEUS_MULTIPROC_DIR is deliberately left unset (single worker per container;
# scale with replicas).
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    LD_PRELOAD=/usr/local/lib/libjemalloc.so.2 \
    PYTHONMALLOC=malloc \
    MALLOC_CONF=background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0

WORKDIR /tmp
USER 10001

EXPOSE 8050

# No curl in the image: probe /healthz with the Python standard library.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('VTE_PORT', '8050') + '/healthz', timeout=4)"]

# Exec form: vte-proxy runs as PID 1 and receives SIGTERM directly (graceful drain).
ENTRYPOINT ["vte-proxy"]
CMD ["serve", "--config", "/etc/vte-proxy/gateway.yaml"]
