#!/usr/bin/env bash
# The Python lock: uv.lock (every package, every extra and group, with hashes) and the
# hashed requirements files exported from it for installers that are not uv.
#
#   scripts/lock.sh update [all | PACKAGE...]   re-lock after editing pyproject.toml (keeps
#                                               every other pin); `all` upgrades everything
#                                               allowed, PACKAGE upgrades just those
#   scripts/lock.sh check                       fail, saying how to fix it, when
#                                               pyproject.toml, uv.lock and the exports disagree
#
# Environment: UV (default .tools/bin/uv, the pinned uv the Makefile installs).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO
UV=${UV:-$REPO/.tools/bin/uv}
readonly UV

# requirements/NAME.txt and the `uv export` selection it holds.
readonly -A EXPORTS=(
    [runtime]="--no-default-groups --extra tracing"
    [build]="--only-group build"
    [uv]="--only-group uv"
)

die() {
    echo "lock.sh: $*" >&2
    exit 1
}

# Prints requirements/NAME.txt as uv.lock says it should be.
export_of() {
    # shellcheck disable=SC2086  # the selection is several words on purpose
    "$UV" export --quiet --frozen --no-emit-project --format requirements-txt ${EXPORTS[$1]}
}

update() {
    local args=()
    case ${1:-} in
    "") ;;
    all) args=(--upgrade) ;;
    *) for package in "$@"; do args+=(--upgrade-package "$package"); done ;;
    esac
    "$UV" lock --quiet "${args[@]}"
    mkdir -p requirements
    for name in "${!EXPORTS[@]}"; do
        # Rewritten only when it changes: make reinstalls uv when requirements/uv.txt is newer.
        export_of "$name" >"requirements/.$name.txt.new"
        if cmp -s "requirements/.$name.txt.new" "requirements/$name.txt"; then
            rm "requirements/.$name.txt.new"
        else
            mv "requirements/.$name.txt.new" "requirements/$name.txt"
        fi
    done
    echo "lock.sh: uv.lock and requirements/ follow pyproject.toml; commit what changed" >&2
}

check() {
    local stale=()
    # --offline: a lock that satisfies pyproject.toml is confirmed without the network; one
    # that does not would need a new resolution, which is `update`'s job, not ours.
    if ! "$UV" lock --check --offline --quiet >/dev/null 2>&1; then
        {
            echo "lock.sh: pyproject.toml and uv.lock disagree:"
            python3 scripts/lock_diff.py "$REPO"
            echo "lock.sh: run \`make lock\` and commit uv.lock and requirements/ with pyproject.toml."
        } >&2
        exit 1
    fi
    for name in "${!EXPORTS[@]}"; do
        if ! diff -q <(export_of "$name") "requirements/$name.txt" >/dev/null 2>&1; then
            stale+=("requirements/$name.txt")
        fi
    done
    if ((${#stale[@]})); then
        die "${stale[*]} not what uv.lock says (edited by hand, or uv.lock changed" \
            "without \`make lock\`). Run \`make lock\` and commit the result."
    fi
}

main() {
    [[ -x $UV ]] || die "no uv at $UV (run: make venv)"
    cd "$REPO"
    local cmd=${1:-}
    shift || true
    case $cmd in
    update) update "$@" ;;
    check) check ;;
    *) die "usage: $0 {update [all | PACKAGE...] | check}" ;;
    esac
}

main "$@"
