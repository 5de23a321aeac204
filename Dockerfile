# syntax=docker/dockerfile:1
# One image for both services (compose picks the command). Built with uv from uv.lock.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: resolve the locked dependencies into /app/.venv -----------------------------
FROM ${PYTHON_IMAGE} AS build
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Dependencies first, in their own layer: source edits do not reinstall them.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project
COPY README.md LICENSE ./
COPY shared ./shared
COPY producer ./producer
COPY gateway ./gateway
COPY pricefeed ./pricefeed
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

# ---- runtime: the virtualenv only, as a non-root user ----------------------------------
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 pricefeed \
 && useradd --system --uid 10001 --gid pricefeed --no-create-home --shell /usr/sbin/nologin pricefeed
COPY --from=build --chown=root:root /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PRICEFEED_HOST=0.0.0.0 \
    PRICEFEED_PORT=8000
WORKDIR /app
USER 10001:10001
EXPOSE 8000
CMD ["pricefeed", "gateway"]
