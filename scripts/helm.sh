#!/usr/bin/env bash
# Print the path of a pinned helm binary, building it with `go install` only when missing.
# The binary lives outside the work tree so clones share it. Go's module and build caches
# (~1.3 GB for helm) are only needed during the build: they are made and removed with it.
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
    # Go reports every module it downloads (over a hundred lines): kept in a log that is
    # shown, without those lines, only if the build fails.
    if ! GOBIN="$tmp/bin" GOMODCACHE="$tmp/gomodcache" GOCACHE="$tmp/gocache" \
        GOFLAGS="${GOFLAGS:+$GOFLAGS }-modcacherw" \
        go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >"$tmp/build.log" 2>&1; then
        grep -v '^go: downloading ' "$tmp/build.log" >&2 || true
        echo "helm.sh: building helm $HELM_VERSION failed" >&2
        exit 1
    fi
    mv "$tmp/bin/helm" "$HELM"
fi

echo "$HELM"
