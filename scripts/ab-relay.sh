#!/usr/bin/env bash
# Two cpm builds compared on the relay, alternating so that both see the
# same phases of a noisy host: ROUNDS times each, a fresh server (UDP
# 127.0.0.1:5069, temporary store, --admin off) under
# ../shared/bench/pager.sh 5069 MESSAGES 1000 2000; prints each run's CPU
# per message and the mean per build.
#   scripts/ab-relay.sh ROUNDS BIN_A BIN_B [MESSAGES=20000]
set -eu
rounds=${1:?rounds}; a=${2:?first cpm binary}; b=${3:?second cpm binary}; messages=${4:-20000}
bench=$(cd "$(dirname "$0")/../../shared/bench" && pwd)
work=$(mktemp -d /tmp/cpm-ab.XXXXXX)
pid=
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
for r in $(seq "$rounds"); do
  for bin in "$a" "$b"; do
    rm -rf "$work/data"
    "$bin" serve --open --admin off --sip udp:127.0.0.1:5069 --data "$work/data" --log warn >"$work/cpm.log" 2>&1 &
    pid=$!
    sleep 1
    us=$(cd "$bench" && SERVER_PIDS=$pid ./pager.sh 5069 "$messages" 1000 2000 | sed -n 's/.*server \([0-9.]*\) us cpu.*/\1/p')
    echo "$r $bin ${us:-failed} us/msg"
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
    sleep 0.5
  done
done | awk '{ print } $3 != "failed" { s[$2] += $3; n[$2]++ } END { for (k in s) printf "%s: mean %.1f us/msg over %d runs\n", k, s[k] / n[k], n[k] }'
