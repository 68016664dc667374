# streamstop image: a wheel built and installed into a virtualenv in a build stage, then
# only that virtualenv and the default config copied onto a clean slim runtime.
# tests/test_dockerfile.py runs this build stage's RUN command outside Docker (no engine
# there), with VENV, BUILD_VENV and WHEELS pointed at temporary directories: keep paths in
# those args.
#
# Every Python package comes from requirements/*.txt, exported from uv.lock with hashes
# (`make lock`): pip checks each download's hash and fetches nothing else.
# BASE_IMAGE is a tag for development builds; releases pass the same tag pinned by digest
# (scripts/release-image.sh, see docs/supply-chain.md).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build

ARG VENV=/opt/venv
ARG BUILD_VENV=/opt/build-venv
ARG WHEELS=/wheels
ENV PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY requirements/build.txt requirements/runtime.txt ./requirements/
COPY streamstop ./streamstop

# The build backend (hatchling) comes from the lock too: no build isolation, which would
# fetch whatever version is newest.
RUN python -m venv "$BUILD_VENV" \
    && "$BUILD_VENV/bin/pip" install --no-cache-dir --require-hashes --only-binary :all: \
        -r requirements/build.txt \
    && "$BUILD_VENV/bin/pip" wheel . --no-deps --no-build-isolation --no-cache-dir \
        --wheel-dir "$WHEELS" \
    && python -m venv "$VENV" \
    && "$VENV/bin/pip" install --no-cache-dir --require-hashes --only-binary :all: \
        -r requirements/runtime.txt \
    && "$VENV/bin/pip" install --no-cache-dir --no-deps --no-index "$WHEELS"/streamstop-*.whl


FROM ${BASE_IMAGE}

ARG BASE_IMAGE
LABEL org.opencontainers.image.title="streamstop" \
      org.opencontainers.image.description="Kafka-driven daemon that cancels outgoing messages through a batch stop API" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"

# Bytecode was compiled at install time; the root filesystem is read-only in Kubernetes.
ENV PATH="/opt/venv/bin:$PATH" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    STREAMSTOP_CONFIG=/etc/streamstop/streamstop.toml

COPY --from=build /opt/venv /opt/venv
COPY config/streamstop.toml /etc/streamstop/streamstop.toml

# Numeric, so Kubernetes' runAsNonRoot can verify it without a passwd lookup.
USER 10001:10001
EXPOSE 9090

ENTRYPOINT ["streamstop"]
CMD ["run"]
