#!/usr/bin/env bash
# Write a CycloneDX SBOM (JSON) of streamstop's runtime environment as uv.lock pins it: the
# packages the image installs, for this machine's platform (Linux: the image's), with
# versions, licenses, package URLs and the dependency graph.
#
#   scripts/sbom.sh [OUT]     default dist/sbom.cdx.json
#
# The environment is installed from the lock (hashes checked) into a temporary directory,
# then described by cyclonedx-py (locked in the dev extra). Output is reproducible: no
# timestamp or serial number unless SOURCE_DATE_EPOCH asks for a timestamp.
# Environment: UV (default .tools/bin/uv), CYCLONEDX_PY (default .venv/bin/cyclonedx-py).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO
readonly UV=${UV:-$REPO/.tools/bin/uv}
readonly CYCLONEDX_PY=${CYCLONEDX_PY:-$REPO/.venv/bin/cyclonedx-py}

die() {
    echo "sbom.sh: $*" >&2
    exit 1
}

main() {
    local out=${1:-dist/sbom.cdx.json} tmp version
    [[ -x $UV && -x $CYCLONEDX_PY ]] || die "uv or cyclonedx-py missing (run: make venv)"
    mkdir -p "$(dirname "$out")"
    out=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
    cd "$REPO"
    tmp=$(mktemp -d)
    # shellcheck disable=SC2064  # expand now: $tmp is local
    trap "rm -rf '$tmp'" EXIT
    UV_PROJECT_ENVIRONMENT="$tmp/env" "$UV" sync --quiet --frozen --no-default-groups --extra tracing \
        --no-install-project
    # The version is dynamic (hatch reads streamstop/__init__.py); the SBOM's root component
    # needs it written out, so cyclonedx-py reads a copy of pyproject.toml that has it.
    version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' streamstop/__init__.py)
    [[ -n $version ]] || die "no __version__ in streamstop/__init__.py"
    sed -e "s/^dynamic = \[\"version\"\]$/version = \"$version\"/" pyproject.toml \
        >"$tmp/pyproject.toml"
    grep -q "^version = \"$version\"$" "$tmp/pyproject.toml" ||
        die "pyproject.toml has no \`dynamic = [\"version\"]\` line to fill in"
    "$CYCLONEDX_PY" environment --pyproject "$tmp/pyproject.toml" --mc-type application \
        --output-reproducible --output-format JSON --output-file "$out" "$tmp/env"
    echo "sbom.sh: wrote $out (streamstop $version, CycloneDX JSON)" >&2
}

main "$@"
