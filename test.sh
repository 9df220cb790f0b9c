#!/usr/bin/env bash
# Runs every check and test of dmon: formatting, clippy, and `cargo test`.
# Works from a fresh clone as root and non-interactively (CI=true, no stdin):
# it creates ./.venv with the test-only Python packages and installs the
# system packages tests drive (tmux, riemann-c-client, prometheus, curl,
# graphite-carbon, influxdb, chromium, nats-server, openssl) if they are
# missing, and builds the book under docs/ with a pinned mdbook.
set -euo pipefail
cd "$(dirname "$0")"

# Pinned, transitive dependencies included, so every machine tests with the
# same packages; see the file for how to update it.
PY_REQUIREMENTS=tests/requirements.txt

log() { printf '==> [%4ss] %s\n' "$SECONDS" "$*" >&2; }

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
# tests/http.rs: a real Prometheus scrapes dmon; curl reads SSE.
command -v prometheus >/dev/null 2>&1 || apt_missing+=(prometheus)
command -v curl >/dev/null 2>&1 || apt_missing+=(curl)
# A real carbon for graphite() (tests/graphite.rs), and whisper-fetch to read
# what it stored.
command -v carbon-cache >/dev/null 2>&1 || apt_missing+=(graphite-carbon)
command -v whisper-fetch >/dev/null 2>&1 || apt_missing+=(python3-whisper)
# A real InfluxDB 1.x for influxdb() (tests/influxdb.rs).
command -v influxd >/dev/null 2>&1 || apt_missing+=(influxdb)
# A real headless Chromium, driven by selenium, for the dashboard
# (tests/dashboard.rs); the driver must be Debian's, matching the browser.
[[ -x /usr/bin/chromium ]] || apt_missing+=(chromium)
[[ -x /usr/bin/chromedriver ]] || apt_missing+=(chromium-driver)
# A real NATS JetStream server for clustering (tests/cluster*.rs).
command -v nats-server >/dev/null 2>&1 || apt_missing+=(nats-server)
# tests/shell.rs: help()'s pager, a real one with its own screen.
command -v less >/dev/null 2>&1 || apt_missing+=(less)
# tests/tls.rs: `openssl s_client` checks the listeners' handshake.
command -v openssl >/dev/null 2>&1 || apt_missing+=(openssl)
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
cargo fmt --all --check
log "module cycles"
python3 tools/module_cycles.py
log "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings
# The server without its optional parts (cluster, http, mail) must build
# too; the pip package's build covers dmon-python without cluster.
cargo clippy -q -p dmon-server --no-default-features -- -D warnings
# cargo-nextest pinned, so every machine runs the tests the same way
# (.config/nextest.toml: tests in parallel, each in its own process, which
# go one at a time); it runs no doctests, so `cargo test --doc` does. The
# integration tests are one binary (tests/main.rs); one file's tests:
# `cargo nextest run -E 'test(/^http::/)'`.
NEXTEST_VERSION=0.9.151
if [[ "$(cargo nextest --version 2>/dev/null | head -n 1)" != "cargo-nextest $NEXTEST_VERSION "* ]]; then
    log "installing cargo-nextest $NEXTEST_VERSION"
    cargo install -q --locked cargo-nextest --version "$NEXTEST_VERSION"
fi
log "cargo nextest run"
cargo nextest run --no-fail-fast
log "cargo test --doc"
cargo test --doc

# --- The book under docs/ ---------------------------------------------------
# mdBook pinned, so every machine builds the book with the same tool (only
# its search feature: the server and watcher are not used here). The links
# are checked by tests/docs.rs, under `cargo test` above; this build fails
# on what mdBook itself cannot do, such as a missing chapter or include.
MDBOOK_VERSION=0.5.4
if [[ "$(mdbook --version 2>/dev/null)" != "mdbook v$MDBOOK_VERSION" ]]; then
    log "installing mdbook $MDBOOK_VERSION"
    cargo install -q --locked mdbook --version "$MDBOOK_VERSION" --no-default-features --features search
fi
log "mdbook build docs"
mdbook build docs

# --- Fuzzing: a short campaign of each target, at once -----------------------
# cargo-fuzz pinned, so every machine fuzzes with the same tool. libFuzzer
# needs unstable rustc flags: the nightly toolchain where rustup has one,
# else the machine's own toolchain with RUSTC_BOOTSTRAP=1 (no other
# toolchain can be fetched here). The targets need dmon-core alone, built
# with the release profile and debug assertions; the committed corpus is
# also replayed by `cargo test` (crates/dmon-core/tests/fuzz_corpus.rs).
CARGO_FUZZ_VERSION=0.13.2
FUZZ_SECONDS=${DMON_FUZZ_SECONDS:-30}
FUZZ_TARGETS=(json riemann query)
if [[ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
    log "installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install -q --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
fuzz=(cargo fuzz)
if rustup run nightly rustc --version >/dev/null 2>&1; then
    fuzz=(cargo +nightly fuzz)
else
    export RUSTC_BOOTSTRAP=1
fi
log "cargo fuzz build -O -a"
(cd fuzz && "${fuzz[@]}" build -O -a)
scratch=$(mktemp -d)
log "cargo fuzz run ${FUZZ_TARGETS[*]} (${FUZZ_SECONDS}s, at once)"
declare -A fuzz_pid
for target in "${FUZZ_TARGETS[@]}"; do
    # New inputs go to a scratch folder, so the committed seeds stay as
    # they are; a crash leaves its input in fuzz/artifacts/$target/.
    mkdir -p "$scratch/$target"
    (cd fuzz && "${fuzz[@]}" run -O -a "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 -print_final_stats=1) \
        >"$scratch/$target.log" 2>&1 &
    fuzz_pid[$target]=$!
done
fuzz_failed=()
for target in "${FUZZ_TARGETS[@]}"; do
    # libFuzzer prints a line per new input: keep the log, show its end.
    if wait "${fuzz_pid[$target]}"; then
        echo "$target: $(grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$scratch/$target.log" | tr '\n' ' ')"
    else
        fuzz_failed+=("$target")
        tail -n 60 "$scratch/$target.log"
    fi
done
rm -rf "$scratch"
if ((${#fuzz_failed[@]})); then
    log "fuzz targets that crashed: ${fuzz_failed[*]} (inputs in fuzz/artifacts/)"
    exit 1
fi
