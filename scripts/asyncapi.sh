#!/usr/bin/env bash
# Validate an AsyncAPI document with the pinned AsyncAPI parser (npm package @asyncapi/parser).
#
#   scripts/asyncapi.sh fetch          install the parser once (cached, idempotent)
#   scripts/asyncapi.sh validate FILE  parse FILE, resolving every $ref; print a JSON summary
#                                      of its channels and messages; exit 1 on any error
#
# The pinned versions are scripts/asyncapi/package-lock.json; they are installed with
# `npm ci` into a cache directory named by that lock's hash, outside the work tree so that
# clones share it. Environment: STREAMSTOP_CACHE (default ~/.cache/streamstop).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly SOURCE="$HERE/asyncapi"
LOCK_HASH=$(cat "$SOURCE/package.json" "$SOURCE/package-lock.json" | sha256sum | cut -c1-16)
readonly CACHE="${STREAMSTOP_CACHE:-$HOME/.cache/streamstop}/asyncapi/$LOCK_HASH"

die() {
    echo "asyncapi.sh: $*" >&2
    exit 1
}

fetch() {
    [[ -d $CACHE/node_modules/@asyncapi/parser ]] && return 0
    command -v npm >/dev/null || die "node and npm are required (Node 20 or later)"
    echo "asyncapi.sh: installing the AsyncAPI parser into $CACHE" >&2
    mkdir -p "$(dirname "$CACHE")"
    # Install into a private directory, then rename: an interrupted or concurrent install
    # never leaves a half-filled directory that the next run would trust.
    local tmp
    tmp=$(mktemp -d "$CACHE.XXXXXX")
    # shellcheck disable=SC2064  # expand now: $tmp is local
    trap "rm -rf '$tmp'" EXIT
    cp "$SOURCE/package.json" "$SOURCE/package-lock.json" "$tmp/"
    npm ci --prefix "$tmp" --ignore-scripts --no-audit --no-fund --loglevel=error >&2
    mv -T "$tmp" "$CACHE" 2>/dev/null || [[ -d $CACHE/node_modules/@asyncapi/parser ]] ||
        die "could not move the install into $CACHE"
    rm -rf "$tmp"
    trap - EXIT
}

main() {
    case ${1:-} in
    fetch) fetch ;;
    validate)
        [[ $# -eq 2 ]] || die "usage: $0 validate FILE"
        fetch
        NODE_PATH="$CACHE/node_modules" exec node "$SOURCE/validate.cjs" "$2"
        ;;
    *) die "usage: $0 {fetch|validate FILE}" ;;
    esac
}

main "$@"
