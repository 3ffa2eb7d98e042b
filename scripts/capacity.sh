#!/usr/bin/env bash
# Capacity search, cpm against the Kamailio anchor in the same run: starts a
# fresh Kamailio (../shared/bench/kamailio/run.sh, 127.0.0.1:5080) and a fresh
# cpm (UDP, temporary store), and steps the load generator's offered rate
# through RATES against each, ROUNDS times in alternating order. Each step is
# STEP_SECS of pager-mode traffic (the traffic of pager.sh); a step passes with
# < 0.1 % failures and p99 < 20 ms, and the last line per server names the
# highest passing rate. Every process started here is stopped on exit.
#
# usage: scripts/capacity.sh [RATES=2000,4000,...,30000] [USERS=1000] [STEP_SECS=5] [ROUNDS=1]
# env:   CPM_PORT (default 5094), CPM_ARGS (extra `cpm serve` flags), LOADGEN_ARGS,
#        KAM_SHM (Kamailio shared memory in MB, default 1024; run.sh uses 256),
#        WARMUP (msg/s of an unjudged step of STEP_SECS before each ramp,
#        default 4000; 0 for none)
#
# The warm-up is for the first step's sake: a fresh process faults in its
# memory as it first uses it, and on this VM (virtio-balloon free page
# reporting) each first touch of a 2 MiB page costs 3-5 ms. Without it
# Kamailio failed a first step of 8,000 msg/s in 3 of 4 rounds (twelfth
# session) that it passed with p99 1-2 ms after steps of 4,000 and 6,000.
#
# cpm runs with --rate-limit 0: all generated traffic comes from one source
# IP, which the per-source limit (5,000 req/s by default) would otherwise shed.
set -eu
rates=${1:-2000,4000,6000,8000,10000,12000,14000,16000,18000,20000,24000,28000}
users=${2:-1000}; step_secs=${3:-5}; rounds=${4:-1}
cpm_port=${CPM_PORT:-5094}
kam_shm=${KAM_SHM:-1024}
root=$(cd "$(dirname "$0")/.." && pwd)
bench=$(cd "$root/../shared/bench" && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
data=$(mktemp -d /tmp/cpm-capacity.XXXXXX)
kam= cpm=
stop() { [[ -z $1 ]] || { kill "$1" && wait "$1"; } 2>/dev/null || true; } # wait: the exit status of a killed server
cleanup() { stop "$cpm"; stop "$kam"; rm -rf "$data"; }
trap cleanup EXIT
busy() { ss -Hlun "sport = :$1" | grep -q .; }

(cd "$root" && cargo build --release --locked -q --bin cpm --example loadgen)
loadgen=("$target/release/examples/loadgen" --users "$users" --ramp "$rates" --step-secs "$step_secs"
  --warmup-rate "${WARMUP:-4000}" ${LOADGEN_ARGS:-})

run_kamailio() {
  busy 5080 && { echo "capacity: 127.0.0.1:5080 is taken (another Kamailio?)"; exit 1; }
  # As kamailio/run.sh, but with KAM_SHM MB of shared memory: with run.sh's
  # 256 MB, tm runs out of it near 8,000 msg/s ("build_cell(): could not
  # allocate shared memory", 500 answers), before the CPU is the limit.
  rm -rf /tmp/cpm-bench-kamailio && mkdir -p /tmp/cpm-bench-kamailio
  local db=/tmp/cpm-bench-kamailio/msilo.db
  sqlite3 "$db" </usr/share/kamailio/db_sqlite/standard-create.sql
  sqlite3 "$db" </usr/share/kamailio/db_sqlite/msilo-create.sql
  sqlite3 "$db" 'PRAGMA journal_mode=WAL;' >/dev/null
  kamailio -f "$bench/kamailio/kamailio.cfg" -DD -E -m "$kam_shm" -M 16 -P /tmp/cpm-bench-kamailio/pid \
    >"$data/kamailio.log" 2>&1 &
  kam=$!
  for _ in $(seq 50); do busy 5080 && break; sleep 0.1; done
  sleep 0.5
  local k pids; k=$(cat /tmp/cpm-bench-kamailio/pid); pids="$k $(pgrep -P "$k" | tr '\n' ' ')"
  "${loadgen[@]}" --server 127.0.0.1:5080 --server-pids "$pids" --label kamailio || true
  stop "$kam"; kam=
}

run_cpm() {
  busy "$cpm_port" && { echo "capacity: 127.0.0.1:$cpm_port is taken"; exit 1; }
  rm -rf "$data/cpm"
  "$target/release/cpm" serve --open --admin off --sip "udp:127.0.0.1:$cpm_port" --data "$data/cpm" \
    --log warn --rate-limit 0 ${CPM_ARGS:-} >"$data/cpm.log" 2>&1 &
  cpm=$!
  for _ in $(seq 50); do busy "$cpm_port" && break; sleep 0.1; done
  "${loadgen[@]}" --server "127.0.0.1:$cpm_port" --server-pids "$cpm" --label cpm || true
  stop "$cpm"; cpm=
}

for ((r = 0; r < rounds; r++)); do
  if ((r % 2 == 0)); then run_kamailio; run_cpm; else run_cpm; run_kamailio; fi
done
