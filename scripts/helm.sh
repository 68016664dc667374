#!/usr/bin/env bash
# Print the path of a pinned helm binary, building it with `go install` only when missing.
# The binary and Go's module/build caches live outside the work tree so clones share them.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
CACHE="${STREAMSTOP_CACHE:-$HOME/.cache/streamstop}/helm"
BIN_DIR="$CACHE/$HELM_VERSION"
HELM="$BIN_DIR/helm"

if [[ ! -x "$HELM" ]]; then
    command -v go >/dev/null || { echo "helm.sh: go is required to build helm" >&2; exit 1; }
    mkdir -p "$BIN_DIR"
    echo "helm.sh: building helm $HELM_VERSION into $BIN_DIR (first time takes minutes)" >&2
    # Build into a temporary dir then rename, so an interrupted build never leaves a
    # half-written binary that the next run would trust.
    tmp="$(mktemp -d "$BIN_DIR/.build.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    GOBIN="$tmp" GOMODCACHE="$CACHE/gomodcache" GOCACHE="$CACHE/gocache" \
        GOFLAGS="${GOFLAGS:+$GOFLAGS }-modcacherw" \
        go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
    mv "$tmp/helm" "$HELM"
fi

echo "$HELM"
