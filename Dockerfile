# streamstop image: a wheel built and installed into a virtualenv in a build stage, then
# only that virtualenv and the default config copied onto a clean slim runtime.
# tests/test_dockerfile.py runs this build stage's RUN command outside Docker (no engine
# there), with VENV and WHEELS pointed at temporary directories: keep paths in those args.

FROM python:3.11-slim AS build

ARG VENV=/opt/venv
ARG WHEELS=/wheels
ENV PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY streamstop ./streamstop

RUN pip wheel . --no-deps --no-cache-dir --wheel-dir "$WHEELS" \
    && python -m venv "$VENV" \
    && "$VENV/bin/pip" install --no-cache-dir "$WHEELS"/streamstop-*.whl


FROM python:3.11-slim

LABEL org.opencontainers.image.title="streamstop" \
      org.opencontainers.image.description="Kafka-driven daemon that cancels outgoing messages through a batch stop API" \
      org.opencontainers.image.licenses="Apache-2.0"

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
