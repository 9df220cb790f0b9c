#!/usr/bin/env bash
# Runs every check and test of dmon: formatting, clippy, and `cargo test`.
# Works from a fresh clone as root and non-interactively (CI=true, no stdin):
# it creates ./.venv with the test-only Python packages and installs tmux
# if it is missing.
set -euo pipefail
cd "$(dirname "$0")"

# Pinned, transitive dependencies included, so every machine tests with the
# same packages; see the file for how to update it.
PY_REQUIREMENTS=tests/requirements.txt

log() { printf '==> %s\n' "$*" >&2; }

# --- Python virtualenv with the test-only packages -------------------------
# The venv is made anew whenever tests/requirements.txt changes (its hash is
# kept in .venv), so it holds exactly the pinned packages, nothing left over.
want_hash=$(sha256sum "$PY_REQUIREMENTS" | cut -d' ' -f1)
have_hash=$(cat .venv/requirements.sha256 2>/dev/null || true)
if [[ ! -x .venv/bin/python || "$want_hash" != "$have_hash" ]]; then
    log "creating .venv from $PY_REQUIREMENTS"
    rm -rf .venv
    python3 -m venv .venv
    .venv/bin/python -m pip install -q --disable-pip-version-check -r "$PY_REQUIREMENTS"
    echo "$want_hash" >.venv/requirements.sha256
fi

# --- System packages that tests drive ----------------------------------------
apt_missing=()
command -v tmux >/dev/null 2>&1 || apt_missing+=(tmux)
# Debian's C client; not `command -v`: the PyPI riemann-client in .venv has
# a command of the same name.
[[ -x /usr/bin/riemann-client ]] || apt_missing+=(riemann-c-client)
if ((${#apt_missing[@]})); then
    log "installing ${apt_missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${apt_missing[@]}" >/dev/null
fi

# --- Make the venv the Python that pyo3 builds against and embeds -----------
export VIRTUAL_ENV="$PWD/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
unset PYTHONHOME

# --- Checks and tests -------------------------------------------------------
log "cargo fmt --check"
cargo fmt --check
log "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
log "cargo test --all-targets --no-fail-fast"
cargo test --all-targets --no-fail-fast
