#!/usr/bin/env bash
# Print the path of an OpenTelemetry Collector (OTLP receiver in, OTLP/HTTP exporter out),
# built once with the collector's own builder from the Go module proxy: the real receiver
# the tracing tests export to (tests/test_tracing_otlp.py). The binary lives outside the
# work tree so clones share it; Go's module and build caches (~1.3 GB) are only needed
# during the build and are removed with it.
set -euo pipefail

OTELCOL_VERSION="${OTELCOL_VERSION:-v0.165.0}"
CACHE="${STREAMSTOP_CACHE:-$HOME/.cache/streamstop}/otelcol"
BIN_DIR="$CACHE/$OTELCOL_VERSION"
OTELCOL="$BIN_DIR/otelcol"

if [[ ! -x "$OTELCOL" ]]; then
    command -v go >/dev/null || { echo "otelcol.sh: go is required to build the collector" >&2; exit 1; }
    mkdir -p "$BIN_DIR"
    echo "otelcol.sh: building the OpenTelemetry Collector $OTELCOL_VERSION into $BIN_DIR (first time takes minutes)" >&2
    # Built in a temporary dir then renamed: an interrupted build never leaves a binary.
    tmp="$(mktemp -d "$BIN_DIR/.build.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    cat >"$tmp/builder.yaml" <<YAML
dist:
  name: otelcol
  description: OTLP receiver for streamstop's tracing tests
  output_path: $tmp/dist
receivers:
  - gomod: go.opentelemetry.io/collector/receiver/otlpreceiver $OTELCOL_VERSION
exporters:
  - gomod: go.opentelemetry.io/collector/exporter/otlphttpexporter $OTELCOL_VERSION
YAML
    export GOMODCACHE="$tmp/gomodcache" GOCACHE="$tmp/gocache"
    export GOFLAGS="${GOFLAGS:+$GOFLAGS }-modcacherw"
    # Go and the builder report every module they download: kept in a log that is shown,
    # without those lines, only if the build fails.
    if ! { GOBIN="$tmp/bin" go install "go.opentelemetry.io/collector/cmd/builder@$OTELCOL_VERSION" &&
        "$tmp/bin/builder" --config "$tmp/builder.yaml"; } >"$tmp/build.log" 2>&1; then
        grep -v 'go: downloading ' "$tmp/build.log" >&2 || true
        echo "otelcol.sh: building the collector $OTELCOL_VERSION failed" >&2
        exit 1
    fi
    mv "$tmp/dist/otelcol" "$OTELCOL"
fi

echo "$OTELCOL"
