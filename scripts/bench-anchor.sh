#!/usr/bin/env bash
# Side-by-side with the Kamailio anchor, in one run: fresh servers, then the
# same ../shared/bench script against each, Kamailio first.
#   scripts/bench-anchor.sh relay   [MESSAGES=20000] [USERS=1000] [RATE=2000]   # pager.sh
#   scripts/bench-anchor.sh offline [MESSAGES=20000] [USERS=500]  [RATE=6000]   # offline.sh
# cpm (release build, --admin off, fresh store) listens on 127.0.0.1:5062; the
# anchor is ../shared/bench/kamailio (port 5080; for offline with one worker,
# which its sqlite store needs). Prints both result lines and the CPU ratio.
# relay also runs examples/null_relay (port 5066), the floor: what two
# recvfrom and two sendto per message cost on this host, with no work of
# its own; each server's figure above it is what its own work costs.
set -eu
mode=${1:-relay}
root=$(cd "$(dirname "$0")/.." && pwd)
bench=$root/../shared/bench
work=$(mktemp -d /tmp/cpm-anchor.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
case $mode in
relay) script=pager.sh; args=("${2:-20000}" "${3:-1000}" "${4:-2000}"); one_worker= ;;
offline) script=offline.sh; args=("${2:-20000}" "${3:-500}" "${4:-6000}"); one_worker=1 ;;
*) echo "usage: $0 relay|offline [MESSAGES] [USERS] [RATE]" >&2; exit 2 ;;
esac
[[ -x $root/target/release/cpm ]] || (cd "$root" && cargo build --release --locked -q)
if [[ $mode == relay && ! -x $root/target/release/examples/null_relay ]]; then
  (cd "$root" && cargo build --release --locked -q --example null_relay)
fi

KAM_ONE_WORKER=$one_worker "$bench/kamailio/run.sh" >"$work/kam.log" 2>&1 &
pids+=($!)
sleep 2
k=$(cat /tmp/cpm-bench-kamailio/pid)
kam=$(cd "$bench" && SERVER_PIDS="$k $(pgrep -P "$k" | tr '\n' ' ')" "./$script" 5080 "${args[@]}" | tail -1)
kill "$k" 2>/dev/null || true

"$root/target/release/cpm" serve --open --admin off --sip udp:127.0.0.1:5062 --data "$work/data" --log warn \
  >"$work/cpm.log" 2>&1 &
pids+=($!); cpm=$!
sleep 1
ours=$(cd "$bench" && SERVER_PIDS=$cpm "./$script" 5062 "${args[@]}" | tail -1)
kill "$cpm" 2>/dev/null || true # the floor runs alone, as each server did

floor=
if [[ $mode == relay ]]; then
  "$root/target/release/examples/null_relay" --listen 127.0.0.1:5066 >"$work/floor.log" 2>&1 &
  pids+=($!); nr=$!
  sleep 0.5
  floor=$(cd "$bench" && SERVER_PIDS=$nr "./$script" 5066 "${args[@]}" | tail -1)
fi

echo "kamailio: $kam"
echo "cpm:      $ours"
[[ -n $floor ]] && echo "floor:    $floor"
us() { sed -n 's/.*server \([0-9.]*\) us cpu.*/\1/p' <<<"$1"; }
if [[ -n $(us "$kam") && -n $(us "$ours") ]]; then
  awk -v c="$(us "$ours")" -v k="$(us "$kam")" 'BEGIN { printf "cpu per message: cpm / kamailio = %.2f\n", c / k }'
fi
if [[ -n $(us "$floor") && -n $(us "$kam") && -n $(us "$ours") ]]; then
  awk -v c="$(us "$ours")" -v k="$(us "$kam")" -v f="$(us "$floor")" \
    'BEGIN { printf "above the floor (%.1f us): cpm %.1f us, kamailio %.1f us, ratio %.2f\n", f, c - f, k - f, (c - f) / (k - f) }'
fi
