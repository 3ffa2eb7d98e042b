#!/usr/bin/env bash
# Group fan-out cost: a pre-defined group of MEMBERS users (each one device, all on
# one sipp UAS at 127.0.0.1:5070), MESSAGES messages sent to the group at RATE/s.
# Starts its own cpm (release build) on 127.0.0.1:5090 with a fresh store and prints:
#   group: M msgs x N members, accepted A, copies delivered D in T s (R copies/s), server C us cpu/copy
# usage: scripts/bench-group.sh [MESSAGES=200] [MEMBERS=100] [RATE=20]
set -eu
messages=${1:-200}; members=${2:-100}; rate=${3:-20}
root=$(cd "$(dirname "$0")/.." && pwd)
bench=$root/../shared/bench
work=$(mktemp -d /tmp/cpm-group.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
[[ -n ${KEEP:-} ]] && trap - EXIT
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
{
  printf '[[groups]]\nuri = "sip:big@127.0.0.1"\nowner = "sip:s@127.0.0.1"\nmax_size = %d\nmembers = [' $((members + 1))
  printf '"sip:s@127.0.0.1"'; for ((i = 0; i < members; i++)); do printf ', "sip:g%d@127.0.0.1"' $i; done; printf ']\n'
} >"$work/cpm.toml"
"$root/target/release/cpm" serve --open --admin off --data "$work/data" --config "$work/cpm.toml" --log ${LOG:-warn} \
  --sip udp:127.0.0.1:5090 >/dev/null 2>"$work/cpm.err" &
pids+=($!); server=$!
sleep 0.5
{ echo SEQUENTIAL; for ((i = 0; i < members; i++)); do echo "g$i;127.0.0.1:5070"; done; } >"$work/reg.csv"
echo -e "SEQUENTIAL\ns;big" >"$work/msg.csv"
fast=(-timer_resol 1 -max_recv_loops 100000 -max_sched_loops 100000 -nostdin)
(cd "$work" && exec sipp -sf "$bench/sipp/device_uas.xml" -i 127.0.0.1 -p 5070 "${fast[@]}" -trace_stat -stf dev.csv -fd 1 >/dev/null 2>&1) &
uas=$!; pids+=($uas)
sleep 0.5
(cd "$work" && sipp 127.0.0.1:5090 -sf "$bench/sipp/register.xml" -inf reg.csv -i 127.0.0.1 -p 5071 -m "$members" -r 1000 "${fast[@]}" -timeout 60s >/dev/null 2>&1)
before=$(cpu "$server"); t0=$(date +%s.%N)
(cd "$work" && sipp 127.0.0.1:5090 -sf "$bench/sipp/message_uac.xml" -inf msg.csv -i 127.0.0.1 -p 5072 -m "$messages" -r "$rate" -l 100 "${fast[@]}" -timeout 120s -trace_stat -stf msg.csv.stat >/dev/null 2>&1) || true
t1=$(date +%s.%N)
sleep 3   # the last copies land (forks run after the CF's 202)
after=$(cpu "$server")
kill -INT "$uas"; wait "$uas" 2>/dev/null || true   # sipp writes its final statistics on exit
got=$(python3 -c "import csv,sys;r=list(csv.reader(open(sys.argv[1]),delimiter=';'));print(r[-1][r[0].index('SuccessfulCall(C)')])" "$work/dev.csv" 2>/dev/null || echo 0)
accepted=$(python3 -c "import csv,sys;r=list(csv.reader(open(sys.argv[1]),delimiter=';'));print(r[-1][r[0].index('SuccessfulCall(C)')])" "$work/msg.csv.stat" 2>/dev/null || echo 0)
python3 - "$messages" "$members" "$accepted" "$got" "$t0" "$t1" "$((after - before))" "$(getconf CLK_TCK)" <<'PY'
import sys
m, n, acc, got, t0, t1, ticks, hz = sys.argv[1:]
secs = float(t1) - float(t0); got = int(got)
print(f"group: {m} msgs x {n} members, accepted {acc}, copies delivered {got} in {secs:.1f} s "
      f"({got / secs:.0f} copies/s), server {int(ticks) * 1e6 / int(hz) / max(got, 1):.1f} us cpu/copy")
PY
