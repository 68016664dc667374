#!/usr/bin/env bash
# Print the path of promtool (Prometheus' rule checker), fetched once from Debian's
# `prometheus` package into the cache: `go install` of Prometheus' cmd is refused (its
# go.mod has replace directives), and only promtool is needed, so nothing is installed.
set -euo pipefail

CACHE="${STREAMSTOP_CACHE:-$HOME/.cache/streamstop}/promtool"
PROMTOOL="$CACHE/promtool"

if [[ ! -x "$PROMTOOL" ]]; then
    command -v apt-get >/dev/null || { echo "promtool.sh: apt-get is required" >&2; exit 1; }
    mkdir -p "$CACHE"
    tmp="$(mktemp -d "$CACHE/.fetch.XXXXXX")"
    trap 'rm -rf "$tmp"' EXIT
    echo "promtool.sh: fetching Debian's prometheus package for promtool into $CACHE" >&2
    # `apt-get download` needs package lists; a fresh machine may have none yet.
    (cd "$tmp" && { apt-get download -qq prometheus 2>/dev/null ||
        { apt-get update -qq >/dev/null && apt-get download -qq prometheus; }; }) >&2
    dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root"
    mv "$tmp/root/usr/bin/promtool" "$PROMTOOL"
fi

echo "$PROMTOOL"
