#!/usr/bin/env bash
# Runs every check and test of dmon: formatting, module cycles, clippy, the
# tests (cargo-nextest) and doctests, the book, and a short fuzz campaign.
# Works from a fresh clone as root and non-interactively (CI=true, no stdin):
# it creates ./.venv with the test-only Python packages, installs the
# system packages tests drive (tmux, riemann-c-client, prometheus, curl,
# graphite-carbon, influxdb, chromium, nats-server, openssl) if they are
# missing, and pinned cargo-nextest, mdbook and cargo-fuzz.
#
# On 2 cores the work is about 13 to 14 minutes of one core, so it overlaps:
# the tests (the critical path: build, then mostly waiting on servers and
# sockets) run in the foreground, while the fuzz build, the book and the
# package installs run beside them in the background, niced so the tests
# come first, and clippy lints dmon's crates as the tests' build compiles
# them. Each background step's output is shown
# only if it fails; any failure fails the run.
set -euo pipefail
cd "$(dirname "$0")"

# Pinned, transitive dependencies included, so every machine tests with the
# same packages; see the file for how to update it.
PY_REQUIREMENTS=tests/requirements.txt
NEXTEST_VERSION=0.9.151
MDBOOK_VERSION=0.5.4
CARGO_FUZZ_VERSION=0.13.2
FUZZ_SECONDS=${DMON_FUZZ_SECONDS:-20}
FUZZ_TARGETS=(json riemann query)

log() { printf '==> [%4ss] %s\n' "$SECONDS" "$*" >&2; }

# --- Background steps ---------------------------------------------------------
scratch=$(mktemp -d)
declare -A job_pid
# On any exit, stop what still runs in the background.
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$scratch"' EXIT

# start NAME NICENESS COMMAND...: runs COMMAND in the background.
start() {
    local name=$1 niceness=$2
    shift 2
    log "$name: started in the background"
    (
        set -e
        renice -n "$niceness" -p "$BASHPID" >/dev/null
        "$@"
    ) >"$scratch/$name.log" 2>&1 &
    job_pid[$name]=$!
}

# finish NAME: waits for it, if it was started; on failure shows its
# output and stops here.
finish() {
    local name=$1
    [[ -v "job_pid[$name]" ]] || return 0
    if wait "${job_pid[$name]}"; then
        log "$name: done"
    else
        log "$name: FAILED"
        cat "$scratch/$name.log" >&2
        exit 1
    fi
}

# --- Python virtualenv with the test-only packages -------------------------
# The venv is made anew whenever tests/requirements.txt changes (its hash is
# kept in .venv), so it holds exactly the pinned packages, nothing left over.
# The interpreter is there at once (pyo3 builds against it); pip and the
# packages, which only the tests need, install in the background.
want_hash=$(sha256sum "$PY_REQUIREMENTS" | cut -d' ' -f1)
have_hash=$(cat .venv/requirements.sha256 2>/dev/null || true)
if [[ ! -x .venv/bin/python || "$want_hash" != "$have_hash" ]]; then
    log "creating .venv from $PY_REQUIREMENTS"
    rm -rf .venv
    python3 -m venv --without-pip .venv
    install_python_packages() {
        .venv/bin/python -m ensurepip
        .venv/bin/python -m pip install -q --disable-pip-version-check -r "$PY_REQUIREMENTS"
        echo "$want_hash" >.venv/requirements.sha256
    }
    start python-packages 0 install_python_packages
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
    install_system_packages() {
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq "${apt_missing[@]}" >/dev/null
    }
    log "system packages to install: ${apt_missing[*]}"
    start system-packages 0 install_system_packages
fi

# --- Make the venv the Python that pyo3 builds against and embeds -----------
export VIRTUAL_ENV="$PWD/.venv"
export PATH="$VIRTUAL_ENV/bin:$PATH"
unset PYTHONHOME

# --- Pinned cargo tools, so every machine checks with the same ones ---------
# A one-time cost on a fresh machine (cargo-nextest about 8 minutes here).
if [[ "$(cargo nextest --version 2>/dev/null | head -n 1)" != "cargo-nextest $NEXTEST_VERSION "* ]]; then
    start install-nextest 0 cargo install -q --locked cargo-nextest --version "$NEXTEST_VERSION"
fi

# --- The fuzz targets' build, beside the tests --------------------------------
# libFuzzer needs unstable rustc flags: the nightly toolchain where rustup
# has one, else the machine's own toolchain with RUSTC_BOOTSTRAP=1 (no other
# toolchain can be fetched here). The targets need dmon-core alone,
# without its stream engine (fuzz/Cargo.toml), built
# with the release profile and debug assertions, but optimised at level 1
# and in 16 codegen units: a quarter less CPU than level 3, and half that
# of cargo fuzz's default of one unit, for three quarters of the runs per
# second (docs/src/fuzzing.md has the numbers). No sanitizer: what they
# reach is safe Rust, whose failures (panics, overflows under debug
# assertions, memory and time limits) libFuzzer catches itself. The
# committed corpus is also replayed by the tests
# (crates/dmon-core/tests/fuzz_corpus.rs).
fuzz=(cargo fuzz)
fuzz_rustc=(rustc)
if rustup run nightly rustc --version >/dev/null 2>&1; then
    fuzz=(cargo +nightly fuzz)
    fuzz_rustc=(rustc +nightly)
else
    export RUSTC_BOOTSTRAP=1
fi
fuzz_build=(-O -a -s none --codegen-units 16 --target-dir ../target/fuzz)
# libFuzzer itself: Debian's build for the toolchain's LLVM, unpacked from
# its package (libfuzzer-N-dev, 200 KB; not installed, which would bring
# clang) into target/, rather than libfuzzer-sys compiling its C++ copy:
# a sixth less CPU for the build (159 s against 188 s), and the runs are
# about 1.4 times as many (Debian's is built -O2). Where the package
# cannot be had, libfuzzer-sys builds its copy.
fuzz_llvm=$("${fuzz_rustc[@]}" -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
libfuzzer="$PWD/target/fuzz/libfuzzer-$fuzz_llvm/libFuzzer.a"
unpack_libfuzzer() {
    local dir
    dir=$(dirname "$libfuzzer")
    [[ -f "$libfuzzer" ]] && return 0
    rm -rf "$dir" && mkdir -p "$dir/deb"
    if ! (cd "$dir/deb" && apt-get download -q "libfuzzer-$fuzz_llvm-dev"); then
        echo "libfuzzer-$fuzz_llvm-dev cannot be had: libfuzzer-sys builds its own"
        return 0
    fi
    dpkg-deb -x "$dir"/deb/*.deb "$dir/deb/root"
    mv "$dir/deb/root/usr/lib/llvm-$fuzz_llvm/lib/libFuzzer.a" "$libfuzzer"
    rm -rf "$dir/deb"
}
# The environment of the fuzz targets' build, and of their runs: cargo
# rebuilds them when it differs.
print_fuzz_env() {
    echo CARGO_PROFILE_RELEASE_OPT_LEVEL=1
    [[ ! -f "$libfuzzer" ]] || echo "CUSTOM_LIBFUZZER_PATH=$libfuzzer"
}
build_fuzz_targets() {
    if [[ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
        cargo install -q --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
    fi
    unpack_libfuzzer
    mapfile -t fuzz_env < <(print_fuzz_env)
    cd fuzz && env "${fuzz_env[@]}" "${fuzz[@]}" build "${fuzz_build[@]}"
}
start fuzz-build 15 build_fuzz_targets

# --- The book under docs/, beside the tests ------------------------------------
# mdBook pinned (only its search feature: the server and watcher are not
# used here). The links are checked by tests/docs.rs; this build fails on
# what mdBook itself cannot do, such as a missing chapter or include.
build_book() {
    if [[ "$(mdbook --version 2>/dev/null)" != "mdbook v$MDBOOK_VERSION" ]]; then
        cargo install -q --locked mdbook --version "$MDBOOK_VERSION" --no-default-features --features search
    fi
    mdbook build docs
}
start book 15 build_book

# --- Clippy, in the tests' build ------------------------------------------------
# clippy-driver compiles dmon's own crates for the tests (as `cargo clippy`
# checks them, lints denied), so clippy costs no second build of the
# dependencies. `cargo clippy --all-targets -- -D warnings` says the same.
if ! clippy_driver=$(command -v clippy-driver); then
    log "clippy-driver not found: rustup component add clippy"
    exit 1
fi
export RUSTC_WORKSPACE_WRAPPER="$clippy_driver" CLIPPY_ARGS=-Dwarnings
# Incremental compilation's records cost a fresh build of dmon's crates a
# third more CPU (116 s against 150 s here) and pay off only on rebuilds
# after small edits: off, unless CARGO_INCREMENTAL says otherwise. (Cargo
# rebuilds dmon's crates when this or the next setting changes, so a plain
# `cargo test` after this recompiles them once.)
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# Nor line tables in dmon's crates (the dependencies have no debug info in
# any case): an eighth less CPU for them (90 s against 102 s). A failing
# test still names the file and line of its panic; for backtraces with
# lines, CARGO_PROFILE_DEV_DEBUG=line-tables-only ./test.sh.
export CARGO_PROFILE_DEV_DEBUG="${CARGO_PROFILE_DEV_DEBUG:-false}"

# --- Quick checks ---------------------------------------------------------------
log "cargo fmt --check"
cargo fmt --all --check
log "module cycles"
python3 tools/module_cycles.py

# --- Tests ------------------------------------------------------------------------
# cargo-nextest (.config/nextest.toml: tests in parallel, each in its own
# process; which go one at a time). The integration tests are one binary
# (tests/main.rs); one file's tests: `cargo nextest run -E 'test(/^http::/)'`.
# nextest runs no doctests: `cargo test --doc` does.
finish install-nextest
log "cargo nextest run --no-run (with clippy)"
cargo nextest run --no-run
finish python-packages
finish system-packages
log "cargo nextest run"
cargo nextest run --no-fail-fast
log "cargo test --doc"
cargo test -q --doc
finish book

# --- Fuzzing: a short campaign of each target, at once -------------------------
finish fuzz-build
log "cargo fuzz run ${FUZZ_TARGETS[*]} (${FUZZ_SECONDS}s, at once)"
declare -A fuzz_pid
mapfile -t fuzz_env < <(print_fuzz_env)
for target in "${FUZZ_TARGETS[@]}"; do
    # New inputs go to a scratch folder, so the committed seeds stay as
    # they are; a crash leaves its input in fuzz/artifacts/$target/.
    mkdir -p "$scratch/corpus-$target"
    # Without the clippy wrapper the targets were built without.
    (cd fuzz && env -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS "${fuzz_env[@]}" "${fuzz[@]}" run "${fuzz_build[@]}" "$target" "$scratch/corpus-$target" "corpus/$target" -- \
        -max_total_time="$FUZZ_SECONDS" -rss_limit_mb=2048 -print_final_stats=1) \
        >"$scratch/fuzz-$target.log" 2>&1 &
    fuzz_pid[$target]=$!
done
fuzz_failed=()
for target in "${FUZZ_TARGETS[@]}"; do
    # libFuzzer prints a line per new input: keep the log, show its end.
    if wait "${fuzz_pid[$target]}"; then
        echo "$target: $(grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$scratch/fuzz-$target.log" | tr '\n' ' ')"
    else
        fuzz_failed+=("$target")
        tail -n 60 "$scratch/fuzz-$target.log"
    fi
done
if ((${#fuzz_failed[@]})); then
    log "fuzz targets that crashed: ${fuzz_failed[*]} (inputs in fuzz/artifacts/)"
    exit 1
fi
log "all checks and tests passed"
