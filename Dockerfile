# syntax=docker/dockerfile:1.7
# One image recipe for all five services; SERVICE picks the default command:
#   docker build --build-arg SERVICE=gateway -t ghcr.io/radcurate/gateway:0.1.0 .
# Kubernetes sets the command explicitly (python -m services.<name>, radcurate migrate <name>).

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

# ---- build: resolve the locked dependencies into /app/.venv ---------------------------------
FROM ${PYTHON_IMAGE} AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
# Dependencies first, without the project, so this layer is reused until uv.lock changes.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --frozen --no-dev --no-install-project
COPY pyproject.toml uv.lock README.md ./
COPY radcurate ./radcurate
COPY services ./services
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev \
 && python -m compileall -q radcurate services

# ---- runtime: the interpreter, the venv and the source; no uv, no build tools ---------------
FROM ${PYTHON_IMAGE} AS runtime
ARG SERVICE
RUN case "${SERVICE}" in \
      extractor|mapper|sampler|consensus|gateway) ;; \
      *) echo "build arg SERVICE must be one of extractor mapper sampler consensus gateway, got '${SERVICE}'" >&2; exit 1 ;; \
    esac \
 && groupadd --system --gid 10001 radcurate \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin radcurate
# The root filesystem is read-only in Kubernetes: never try to write .pyc files at runtime.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/app/.venv/bin:$PATH \
    SERVICE=${SERVICE}
WORKDIR /app
COPY --from=build --chown=root:root /app /app
LABEL org.opencontainers.image.source="https://github.com/radcurate/radcurate" \
      org.opencontainers.image.title="radcurate-${SERVICE}"
USER 10001:10001
EXPOSE 8080
CMD ["/bin/sh", "-c", "exec python -m \"services.${SERVICE}\""]
