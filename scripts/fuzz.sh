#!/usr/bin/env bash
# Run every fuzz target in fuzz/ for a while (default 30 s each; `scripts/fuzz.sh 300`), or
# only the ones named after the seconds (`scripts/fuzz.sh 60 cookies handshake`).
#
# Installs cargo-fuzz from crates.io when it is missing. libFuzzer needs a nightly compiler:
# `cargo +nightly` when rustup has one, otherwise the stable one with RUSTC_BOOTSTRAP=1.
# New interesting inputs go to target/fuzz-corpus/<target> (not committed); the committed
# seeds in fuzz/corpus/<target> are read, never written. A crash stops the script with the
# input under fuzz/artifacts/<target>/: fix the bug, then copy the input into
# fuzz/corpus/<target>/ so server/tests/fuzz_corpus.rs keeps it fixed.
# Sanitizer: none (the crate forbids unsafe code; coverage guidance and debug assertions
# stay on), which keeps builds and runs fast on a small machine.
set -euo pipefail

SECONDS_PER_TARGET=${1:-30}
shift || true
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT/fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    FUZZ=(cargo +nightly fuzz)
else
    export RUSTC_BOOTSTRAP=1
    FUZZ=(cargo fuzz)
fi
BUILD_FLAGS=(--sanitizer none --debug-assertions)

"${FUZZ[@]}" build "${BUILD_FLAGS[@]}"
if [ $# -gt 0 ]; then
    TARGETS=("$@")
else
    mapfile -t TARGETS < <("${FUZZ[@]}" list)
fi
for target in "${TARGETS[@]}"; do
    work="$ROOT/target/fuzz-corpus/$target"
    mkdir -p "$work"
    echo "== $target: $SECONDS_PER_TARGET s" >&2
    log="$ROOT/target/fuzz-corpus/$target.log"
    rc=0
    "${FUZZ[@]}" run "${BUILD_FLAGS[@]}" "$target" "$work" "corpus/$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" -max_len=4096 -timeout=10 -rss_limit_mb=1024 \
        -print_final_stats=1 >"$log" 2>&1 || rc=$?
    # libFuzzer's summary: executions, corpus size; or the panic.
    grep -E '^(Done |stat::number_of_executed_units|stat::peak_rss)|panicked|SUMMARY' "$log" >&2 || true
    if [ "$rc" -ne 0 ]; then
        echo "fuzz.sh: $target found a crash; see fuzz/artifacts/$target/ and $log" >&2
        exit 1
    fi
done
echo "fuzz.sh: ${#TARGETS[@]} targets, $SECONDS_PER_TARGET s each, no crash" >&2
