# syntax=docker/dockerfile:1
# wva-adapter image: `docker build -t REGISTRY/wva-adapter:TAG .` (BuildKit, the default
# builder); docs/deploy.md says how to push it and point kustomize at it.
#
# Base image pinned by exact tag (Python patch release and Debian release). Better still,
# pin the digest too: this file was written offline, where the digest cannot be looked up.
# Get it with `docker buildx imagetools inspect python:3.11.13-slim-bookworm` and append
# `@sha256:...` to PYTHON_IMAGE.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# ---- builder: the locked runtime dependencies as files, and a wheel of the project ------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# requirements.lock pins every runtime package with its hashes (docs: README, "Dependencies");
# pip checks each downloaded file against them and resolves nothing itself (--no-deps).
COPY requirements.lock ./
RUN python -m pip download --require-hashes --no-deps --dest /wheels -r requirements.lock \
 && python -m pip install --require-hashes --no-deps --no-index --find-links /wheels \
        -r requirements.lock
# The project's wheel is built with the locked setuptools just installed (no isolated
# build environment fetching an unpinned one).
COPY pyproject.toml README.md LICENSE ./
COPY proto ./proto
COPY adapter ./adapter
RUN python -m pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .

# ---- runtime: the locked wheels installed offline, nothing else -------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="wva-adapter" \
      org.opencontainers.image.description="SLO-aware autoscaler for vLLM: KEDA external scaler and Prometheus metrics" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# The wheels and the lock are bind-mounted, not copied, so they never become a layer. The
# lock is installed first (hashes checked again), then the project's wheel with --no-deps:
# exactly the locked versions, and none of the test or demo extras. pip byte-compiles at
# install time (the root filesystem is read-only at run time), then pip, setuptools and
# wheel are removed: the image cannot install anything.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    --mount=type=bind,from=builder,source=/src/requirements.lock,target=/requirements.lock \
    python -m pip install --no-cache-dir --no-index --find-links=/wheels \
        --require-hashes --no-deps -r /requirements.lock \
 && python -m pip install --no-cache-dir --no-index --no-deps /wheels/wva_adapter-*.whl \
 && python -m pip uninstall --yes pip setuptools wheel \
 && rm -rf /root/.cache
# Non-root, numeric so that `runAsNonRoot` can verify it (65532 = "nonroot" by convention).
USER 65532:65532
WORKDIR /tmp
# 9090: KEDA external scaler (gRPC); 8080: /metrics, /healthz, /readyz
EXPOSE 9090 8080
ENTRYPOINT ["wva-adapter", "run"]
