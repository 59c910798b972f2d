#!/usr/bin/env bash
# Sizing figures for BENCHMARKS.md ("Sizing"): bytes per record in Redis and
# PostgreSQL, and claims per second with the store server's CPU per claim.
# Not run by CI: it takes ~5 minutes and wants the machine to itself.
#
#   scripts/sizing.sh            both parts
#   scripts/sizing.sh bytes      bytes per record only (go run ./bench/sizing)
#   scripts/sizing.sh claims     claims per second only
#
# Claims: idemd on each store, driven by idemload with -dup 0 (every request a
# fresh key, so every request is a claim that executes), SIZING_RUNS runs of
# SIZING_DURATION per store and command. For each run it records executed/s
# and the store server's CPU (user+system) over the run, divided by the
# claims:
#   redis     INFO cpu used_cpu_user+used_cpu_sys: the whole server, so
#             anyone else's commands too; the commands it served per claim
#             (INFO commandstats calls) tell: 8 when it served idemd alone
#             (two scripts, Begin and Complete, each an EVALSHA with its
#             TIME, GET and SET)
#   postgres  utime+stime from /proc/<pid>/stat of the backends of idemd's
#             pool (application_name=idemsizing) plus the server's
#             background processes (WAL writer, checkpointer, ...; they work
#             for every client), and ("all") of every postgres process
# The store is shared with whatever else runs here; the load average is
# printed with every run.
#
# Environment:
#   SIZING_N=100000            records per store for the bytes part
#   SIZING_RUNS=3              runs per store and command
#   SIZING_DURATION=15s        each run's length
#   SIZING_WORKERS=16          idemload workers
#   SIZING_COMMANDS="reports.generate widgets.create"
#   SIZING_REDIS_DB=5          the logical database idemd uses; must be empty,
#                              and is emptied (FLUSHDB) afterwards
#   SIZING_BYTES_REDIS=redis://127.0.0.1:6379/9   the bytes part's database
#   IDEMPOTENCY_POSTGRES_URL   default postgres://postgres@127.0.0.1:5432/test?sslmode=disable
#
# Load goes to 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

what=${1:-all}
runs=${SIZING_RUNS:-3}
duration=${SIZING_DURATION:-15s}
workers=${SIZING_WORKERS:-16}
commands=${SIZING_COMMANDS:-reports.generate widgets.create}
rdb=${SIZING_REDIS_DB:-5}
pg_url=${IDEMPOTENCY_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}
tick=$(getconf CLK_TCK)

log() { printf '== %s\n' "$*" >&2; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

echo "machine: $(nproc) cores, $(uname -sr); $(redis-cli INFO server | grep -o 'redis_version:[0-9.]*'); $(psql "$pg_url" -Atc 'SHOW server_version')"
echo "load average at start: $(loadavg)"

if [ "$what" = all ] || [ "$what" = bytes ]; then
  log "bytes per record: go run ./bench/sizing -n ${SIZING_N:-100000}"
  (cd bench && go run ./sizing -n "${SIZING_N:-100000}" \
    -redis "${SIZING_BYTES_REDIS:-redis://127.0.0.1:6379/9}" -postgres "$pg_url")
  echo "load average after the bytes part: $(loadavg)"
fi
[ "$what" = all ] || [ "$what" = claims ] || exit 0

bin=$(mktemp -d)
schema=idemsizing_load_$$
pid=
flush=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  psql "$pg_url" -q -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
  if [ -n "$flush" ]; then redis-cli -n "$rdb" FLUSHDB >/dev/null || true; fi
  rm -rf "$bin"
}
trap cleanup EXIT
go build -o "$bin/idemd" ./cmd/idemd
go build -o "$bin/idemload" ./cmd/idemload

if [ "$(redis-cli -n "$rdb" DBSIZE)" != 0 ]; then
  echo "redis db $rdb is not empty; set SIZING_REDIS_DB to an empty one" >&2
  exit 1
fi
flush=1
psql "$pg_url" -q -c "CREATE SCHEMA $schema"
sep='?'
case $pg_url in *\?*) sep='&' ;; esac
stores=("redis://127.0.0.1:6379/$rdb" "${pg_url}${sep}search_path=$schema&application_name=idemsizing")
labels=(redis postgres)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

# pg_ticks prints "pid ticks" (utime+stime) of every postgres process.
pg_ticks() {
  local f
  for f in /proc/[0-9]*/stat; do
    # comm may hold spaces; the fields after it start at ") ".
    read -r line <"$f" 2>/dev/null || continue
    case $line in *"(postgres)"*) ;; *) continue ;; esac
    rest=${line##*) }
    set -- $rest
    echo "${f//[^0-9]/} $((${12} + ${13}))"
  done
}
redis_cpu() { redis-cli INFO cpu | tr -d '\r' | awk -F: '/^used_cpu_(user|sys):/{s+=$2} END{printf "%.6f\n", s}'; }
redis_calls() { redis-cli INFO commandstats | tr -d '\r' | grep -o 'calls=[0-9]*' | awk -F= '{s+=$2} END{print s+0}'; }

# pg_cpu before after own prints the CPU seconds, between two pg_ticks
# listings, of the pids in own and of every postgres process. A process
# that started in between counts from zero; one that ended is lost, hence
# the "after" listing comes before idemd exits.
pg_cpu() {
  python3 - "$@" "$tick" <<'PY'
import sys
def read(p):
    return {int(a): int(b) for a, b in (l.split() for l in open(p) if l.strip())}
before, after = read(sys.argv[1]), read(sys.argv[2])
own = {int(l) for l in open(sys.argv[3]) if l.strip()}
tick = int(sys.argv[4])
delta = {p: t - before.get(p, 0) for p, t in after.items()}
print(sum(d for p, d in delta.items() if p in own) / tick, sum(delta.values()) / tick)
PY
}

results=$bin/results.tsv
for i in "${!stores[@]}"; do
  label=${labels[$i]}
  for cmd in $commands; do
    for r in $(seq 1 "$runs"); do
      "$bin/idemd" -addr "127.0.0.1:$port" -store "${stores[$i]}" -log-level warn >/dev/null 2>&1 &
      pid=$!
      for _ in $(seq 1 100); do
        curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
        sleep 0.1
      done
      if [ "$label" = redis ]; then
        c0=$(redis_cpu) n0=$(redis_calls)
      else
        pg_ticks >"$bin/pg0"
      fi
      l0=$(loadavg)
      "$bin/idemload" -url "http://127.0.0.1:$port" -workers "$workers" -duration "$duration" \
        -dup 0 -command "$cmd" -json -quiet -label "$label" >"$bin/run.json"
      if [ "$label" = redis ]; then
        c1=$(redis_cpu) n1=$(redis_calls)
        main=$(python3 -c "print($c1 - $c0)") all=$main calls=$((n1 - n0))
      else
        pg_ticks >"$bin/pg1"
        psql "$pg_url" -At -c "SELECT pid FROM pg_stat_activity
          WHERE application_name = 'idemsizing' OR backend_type <> 'client backend'" >"$bin/own"
        read -r main all < <(pg_cpu "$bin/pg0" "$bin/pg1" "$bin/own")
        calls=-
      fi
      l1=$(loadavg)
      kill "$pid"
      wait "$pid" 2>/dev/null || true
      pid=
      python3 - "$bin/run.json" "$label" "$cmd" "$r" "$main" "$all" "$calls" "$l0" "$l1" <<'PY' | tee -a "$results"
import json, sys
j = json.load(open(sys.argv[1]))
label, cmd, r, main, all_, calls, l0, l1 = sys.argv[2:]
count = {o["outcome"]: o["count"] for o in j["outcomes"]}
ex = count["executed"]
per = lambda s: round(float(s) / ex * 1e6, 1)
cpc = "-" if calls == "-" else round(int(calls) / ex, 2)
print("\t".join(map(str, [label, cmd, r, round(ex / j["seconds"]), ex, count["error"],
    per(main), per(all_), cpc, l0, l1])))
PY
    done
  done
done

echo
echo "store CPU per claim (user+system): redis = the server's used_cpu (cmds/claim: commands it"
echo "served per claim, 8 when idemd was alone); postgres = idemd's backends + background"
echo "processes (all: every postgres process, anyone else's backends too)"
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
groups = {}
for r in rows:
    groups.setdefault((r[0], r[1]), []).append(r)
def col(rs, i):
    v = [float(r[i]) for r in rs]
    return f"{statistics.median(v):.0f} ({min(v):.0f}-{max(v):.0f})", statistics.median(v)
print(f"{'store':9} {'command':17} {'claims/s':18} {'CPU us/claim':20} {'all':20} {'claims/s per store core'}")
for (label, cmd), rs in groups.items():
    c, _ = col(rs, 3)
    m, mm = col(rs, 6)
    a, _ = col(rs, 7)
    print(f"{label:9} {cmd:17} {c:18} {m:20} {a:20} {1e6 / mm:.0f}")
print("runs: store command run claims/s claims errors us/claim all cmds/claim loadavg-before loadavg-after")
for r in rows:
    print("  " + "  ".join(r))
PY
echo "load average at end: $(loadavg)"
