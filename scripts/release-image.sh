#!/usr/bin/env bash
# Release build of the image, on the base image pinned by digest: the Dockerfile names a
# tag (ARG BASE_IMAGE), which moves; a release resolves it to a digest once, builds on
# exactly that, and records it in the image's org.opencontainers.image.base.name label.
#
#   scripts/release-image.sh IMAGE:TAG [extra `docker build` arguments...]
#
# The digest is looked up with `docker buildx imagetools inspect` (the index digest, valid
# for every platform), or taken from BASE_DIGEST=sha256:... when set (looked up elsewhere,
# e.g. `crane digest python:3.11-slim`). Nothing is built unless it is a sha256 digest.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO

die() {
    echo "release-image.sh: $*" >&2
    exit 1
}

main() {
    [[ $# -ge 1 && $1 != -* ]] || die "usage: $0 IMAGE:TAG [docker build arguments...]"
    local image=$1 base digest
    shift
    # The tag the Dockerfile builds on, without a digest if one was committed there.
    base=$(sed -n 's/^ARG BASE_IMAGE=\([^@]*\).*$/\1/p' "$REPO/Dockerfile")
    [[ -n $base ]] || die "no \`ARG BASE_IMAGE=\` in $REPO/Dockerfile"
    if [[ -n ${BASE_DIGEST:-} ]]; then
        digest=$BASE_DIGEST
    else
        digest=$(docker buildx imagetools inspect "$base" --format '{{.Manifest.Digest}}') ||
            die "could not look up the digest of $base (set BASE_DIGEST=sha256:... to give it)"
    fi
    [[ $digest =~ ^sha256:[0-9a-f]{64}$ ]] || die "not a sha256 digest for $base: '$digest'"
    echo "release-image.sh: building $image on $base@$digest" >&2
    docker build --build-arg "BASE_IMAGE=$base@$digest" --tag "$image" "$@" "$REPO"
}

main "$@"
