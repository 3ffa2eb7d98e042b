#!/usr/bin/env bash
# Instructions per relayed message, by function: callgrind on the engine
# worker of a fresh cpm while the load generator sends MESSAGES messages
# at 200/s (slow enough for valgrind). Deterministic, unlike CPU time on
# this noisy host, so it is how two builds' per-message work is compared.
#   scripts/callgrind.sh OUT [MESSAGES=3000]
# Builds a release binary with debug info and frame pointers into
# target/callgrind (CG_TARGET to use another; a separate directory, as the
# flags would otherwise rebuild the normal one), writes callgrind's
# profile to OUT and prints the total and the per-message figure; then
# read it with e.g.
#   callgrind_annotate --inclusive=yes OUT | head -60
# Only the worker's LocalSet is counted (--toggle-collect), not start-up
# or the store's threads. --fair-sched: otherwise valgrind's one-thread-
# at-a-time scheduling starves the store threads during registration.
set -eu
out=${1:?usage: $0 OUT [MESSAGES]}
messages=${2:-3000}
port=${CG_PORT:-5097}
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CG_TARGET:-$root/target/callgrind}
command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind is not installed" >&2; exit 1; }
(cd "$root" && CARGO_PROFILE_RELEASE_DEBUG=1 RUSTFLAGS="-C force-frame-pointers=yes" \
  CARGO_TARGET_DIR="$target" cargo build --release --locked -q --bin cpm)
(cd "$root" && cargo build --release --locked -q --example loadgen)
work=$(mktemp -d /tmp/cpm-callgrind.XXXXXX)
vg=
cleanup() { [[ -n $vg ]] && kill -INT "$vg" 2>/dev/null && wait "$vg" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
valgrind --tool=callgrind --fair-sched=yes --collect-atstart=no --toggle-collect='*LocalSet*run_until*' \
  --callgrind-out-file="$out" "$target/release/cpm" serve --open --admin off --sip "udp:127.0.0.1:$port" \
  --data "$work/data" --log warn --max-queue-delay 0 --rate-limit 0 >"$work/serve.log" 2>&1 &
vg=$!
for _ in $(seq 150); do ss -Hlun "sport = :$port" | grep -q . && break; sleep 0.2; done
sleep 1
"$root/target/release/examples/loadgen" --server "127.0.0.1:$port" --users 100 --rate 200 \
  --messages "$messages" --timeout-ms 10000 | grep -E '^offered'
kill -INT "$vg"; wait "$vg" || true; vg=
total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
echo "callgrind: $total instructions on the worker, $((total / messages)) per message ($out)"
