# syntax=docker/dockerfile:1
# wva-adapter image: `docker build -t wva-adapter:0.1.0 .` (BuildKit, the default builder).
#
# Base image pinned by exact tag (Python patch release and Debian release). Better still,
# pin the digest too: this file was written offline, where the digest cannot be looked up.
# Get it with `docker buildx imagetools inspect python:3.11.13-slim-bookworm` and append
# `@sha256:...` to PYTHON_IMAGE.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# ---- builder: a wheel of the project plus wheels of all its runtime dependencies ------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proto ./proto
COPY adapter ./adapter
RUN python -m pip wheel --no-deps --wheel-dir /wheels . \
 && python -m pip wheel --wheel-dir /wheels /wheels/wva_adapter-*.whl

# ---- runtime: the wheels installed offline, nothing else ------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="wva-adapter" \
      org.opencontainers.image.description="SLO-aware autoscaler for vLLM: KEDA external scaler and Prometheus metrics" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# The wheels are bind-mounted, not copied, so they never become a layer. pip byte-compiles
# at install time (the root filesystem is read-only at run time), then pip, setuptools and
# wheel are removed: the image cannot install anything.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m pip install --no-cache-dir --no-index --find-links=/wheels wva-adapter \
 && python -m pip uninstall --yes pip setuptools wheel \
 && rm -rf /root/.cache
# Non-root, numeric so that `runAsNonRoot` can verify it (65532 = "nonroot" by convention).
USER 65532:65532
WORKDIR /tmp
# 9090: KEDA external scaler (gRPC); 8080: /metrics, /healthz, /readyz
EXPOSE 9090 8080
ENTRYPOINT ["wva-adapter", "run"]
