#!/usr/bin/env bash
# CPU time and context switches of each thread of process PID while a
# command runs: which of cpm's threads (worker, note writer, UDP outbox,
# store flusher, sled's) pays for a load. From /proc, so no perf needed.
#   scripts/thread-cpu.sh PID -- COMMAND [ARGS...]
# e.g. with a cpm serving on 127.0.0.1:5094:
#   scripts/thread-cpu.sh "$(pgrep -f 'cpm serve')" -- \
#     target/release/examples/loadgen --server 127.0.0.1:5094 --rate 16000 --messages 96000
# Prints one line per thread that ran: user and system milliseconds, and
# voluntary / involuntary context switches (a thread preempted while it had
# work shows in the second). Threads that started or ended during the
# command are left out.
set -eu
pid=${1:?usage: $0 PID -- COMMAND...}
shift
[[ ${1:-} == -- ]] && shift
[[ $# -gt 0 ]] || { echo "usage: $0 PID -- COMMAND..." >&2; exit 2; }
[[ -d /proc/$pid/task ]] || { echo "no process $pid" >&2; exit 1; }
tick_ms=$((1000 / $(getconf CLK_TCK)))
snapshot() {
  for t in /proc/"$pid"/task/*; do
    # Fields after the ") " that ends the name: utime is the 12th, stime the 13th.
    read -r -a f < <(sed 's/.*) //' "$t/stat" 2>/dev/null) || continue
    printf '%s %s %s %s %s\n' "${t##*/}" "$(tr ' ' _ <"$t/comm")" "${f[11]}" "${f[12]}" \
      "$(awk '/^voluntary_ctxt/ {v = $2} /^nonvoluntary_ctxt/ {n = $2} END {print v, n}' "$t/status")"
  done | sort
}
before=$(mktemp); after=$(mktemp)
trap 'rm -f "$before" "$after"' EXIT
snapshot >"$before"
# A failing command (a load run that missed its target) still gets its table.
status=0
"$@" || status=$?
snapshot >"$after"
printf '%-8s %-16s %9s %9s %9s %9s\n' tid thread user_ms sys_ms vol_cs invol_cs
join "$before" "$after" | awk -v ms="$tick_ms" '{
  u = ($8 - $3) * ms; s = ($9 - $4) * ms; v = $10 - $5; n = $11 - $6
  if (u + s + v + n > 0) printf "%-8s %-16s %9d %9d %9d %9d\n", $1, $2, u, s, v, n }'
exit "$status"
