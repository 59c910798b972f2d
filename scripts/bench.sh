#!/usr/bin/env bash
# Runs issue 5's performance comparison and summarises it with benchstat.
#
#   scripts/bench.sh            the comparison, the idemload sweep and the chart
#   scripts/bench.sh profile    CPU and allocation profiles of the hot paths
#   scripts/bench.sh tx         issue 11's transactional commands only (~2 min)
#   scripts/bench.sh txprofile  where a transactional command's time goes:
#                               sketches, costs by statement, steps (~4 min)
#
# Everything is measured in one run, on this machine, and every figure that
# BENCHMARKS.md publishes is a ratio between benchmarks of that run. Results
# go to bench/results/ (BENCH_OUT to change): one go-test output file per
# group, benchstat summaries, targets.md (bench/cmd/benchtargets), the
# idemload summaries and, with the sweep, bench/throughput.png.
#
# Environment:
#   BENCH_COUNT=6          rounds of every benchmark (benchstat wants 6 for
#                          its confidence intervals)
#   BENCH_TIME=300ms       -benchtime of the timed benchmarks
#   BENCH_LOAD=1           run the idemload sweep (0 to skip)
#   BENCH_LOAD_DURATION=2s duration of each idemload run
#   BENCH_WORKERS="1 2 4 8 16 32 64"
#   IDEMPOTENCY_REDIS_URL, IDEMPOTENCY_POSTGRES_URL  the servers (defaults:
#     redis://127.0.0.1:6379/0, postgres://postgres@127.0.0.1:5432/test?sslmode=disable)
#
# Load goes to 127.0.0.1 only. The machine is usually shared: expect noise,
# and compare ratios, not absolute times.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

count=${BENCH_COUNT:-6}
btime=${BENCH_TIME:-300ms}
out=${BENCH_OUT:-$root/bench/results}
redis_url=${IDEMPOTENCY_REDIS_URL:-redis://127.0.0.1:6379/0}
pg_url=${IDEMPOTENCY_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}
mkdir -p "$out"

log() { printf '== %s\n' "$*" >&2; }

gobin=$(go env GOPATH)/bin
benchstat=$gobin/benchstat
if ! [ -x "$benchstat" ]; then
  log "installing benchstat"
  go install golang.org/x/perf/cmd/benchstat@latest
fi

# gotest runs go test in the bench module $count times with -count 1, output
# to $out/$1.txt. Rounds, not -count: -count repeats each benchmark before
# the next, while a round runs every contender once, so that load from the
# rest of a shared machine weighs on all of them alike.
gotest() {
  local name=$1
  shift
  : >"$out/$name.txt"
  (cd bench && go test -c -o "$out/bench.test" .)
  for i in $(seq 1 "$count"); do
    log "round $i/$count: go test $* >> $name.txt"
    (cd bench && "$out/bench.test" -test.run '^$' "${@/#-/-test.}") >>"$out/$name.txt"
  done
  rm -f "$out/bench.test"
  grep -cE '^Benchmark' "$out/$name.txt" | xargs printf '   %s results\n' >&2
}

profile() {
  # go test -bench splits its pattern at each '/', one part per level.
  local dir=$out/profiles
  mkdir -p "$dir"
  prof() { # name, package dir, bench regexp, -cpu, go test args…
    local name=$1 pkg=$2 re=$3 cpu=$4
    shift 4
    log "profiling $name"
    (cd "$pkg" && go test -run '^$' -bench "$re" -cpu "$cpu" "$@" \
      -cpuprofile "$dir/$name.cpu" -memprofile "$dir/$name.mem" -o "$dir/$name.test" >/dev/null)
    go tool pprof -top -nodecount 25 "$dir/$name.test" "$dir/$name.cpu" >"$dir/$name.cpu.txt" 2>/dev/null
    go tool pprof -top -nodecount 25 -sample_index=alloc_space "$dir/$name.test" "$dir/$name.mem" >"$dir/$name.alloc.txt" 2>/dev/null
    go tool pprof -top -nodecount 25 -sample_index=alloc_objects "$dir/$name.test" "$dir/$name.mem" >"$dir/$name.allocs.txt" 2>/dev/null
  }
  prof memory-lookup bench 'Cache/op=LookupHit/impl=idemkit$' 2 -benchtime 30000000x
  prof memory-store bench 'Cache/op=(Store|InsertEvict)/impl=idemkit$' 2 -benchtime 5000000x
  prof engine-do . 'EngineDo' 2 -benchtime 500000x
  prof middleware bench 'HTTPInProcess/path=(replay|fresh)/impl=idemhttp$' 2 -benchtime 200000x
  prof redisstore bench 'Redis/op=(Replay|Claim)/impl=redisstore/par=64' 2 -benchtime 50000x
  prof pgstore bench 'Postgres/op=(Replay|Claim)/impl=pgstore' 2 -benchtime 10000x
  prof pgstore-tx-fresh bench 'Tx$/op=write/impl=pgstore' 2 -benchtime 5000x
  prof pgstore-tx-replay bench 'Tx$/op=read/impl=pgstore' 2 -benchtime 50000x
  log "profiles and their pprof -top in $dir"
}

if [ "${1:-}" = profile ]; then
  profile
  exit 0
fi

# tx is issue 11's comparison: a transactional command (pgstore.Run) against
# the bare transaction doing the same INSERT, and its replay against a
# primary-key SELECT, interleaved within each round (bench/pgtx_test.go);
# then the durable commits per operation, counted in the WAL
# (TestTxCommitsPerOp).
tx() {
  gotest tx -bench '^BenchmarkTxInterleaved$' -cpu 2 -benchtime 1x
  "$benchstat" "$out/tx.txt" >"$out/tx.benchstat.txt" 2>&1 || true
  log "commits per operation"
  (cd bench && go test -count 1 -run '^TestTxCommitsPerOp$' -v .) >"$out/tx-commits.txt" 2>&1 || true
  grep -E '^(--- |ok|FAIL)' "$out/tx-commits.txt" >&2 || true
}

# txprofile: what the transactional command's statements cost, and sketches
# of cheaper sequences in raw pgx (bench/pgtx_sketch_test.go).
txprofile() {
  gotest tx-sketch -bench '^BenchmarkTx(Sketch|Costs|Steps)$' -cpu 2 -benchtime 1x
  "$benchstat" "$out/tx-sketch.txt" >"$out/tx-sketch.benchstat.txt" 2>&1 || true
}

case "${1:-}" in
tx | txprofile)
  {
    echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
    echo "commit: $(git rev-parse --short HEAD 2>/dev/null)"
    echo "nproc: $(nproc)"
    echo "postgresql: $(psql "$pg_url" -tAc 'SHOW server_version' 2>/dev/null)"
    echo "postgresql synchronous_commit: $(psql "$pg_url" -tAc 'SHOW synchronous_commit' 2>/dev/null)"
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  } >"$out/$1-machine.txt"
  "$1"
  echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/$1-machine.txt"
  cat "$out/$1-machine.txt" >&2
  if [ "$1" = tx ]; then
    (cd bench && go run ./cmd/benchtargets "$out"/tx.txt) | grep -E '^\| (target|---|pgstore\.Run)' >"$out/tx-targets.md"
    cat "$out/tx-targets.md" >&2
  fi
  log "results in $out"
  exit 0
  ;;
esac

# 0. The machine and the versions, for BENCHMARKS.md.
{
  echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null)"
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "memory: $(free -g | awk '/^Mem:/ {print $2 " GiB"}')"
  echo "kernel: $(uname -r)"
  echo "go: $(go version)"
  echo "redis: $(redis-cli -u "$redis_url" INFO server 2>/dev/null | tr -d '\r' | grep -m1 '^redis_version:' | cut -d: -f2)"
  echo "postgresql: $(psql "$pg_url" -tAc 'SHOW server_version' 2>/dev/null)"
  echo "postgresql synchronous_commit: $(psql "$pg_url" -tAc 'SHOW synchronous_commit' 2>/dev/null)"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$out/machine.txt"
cat "$out/machine.txt" >&2

# 1. The comparison.
gotest cache -bench '^BenchmarkCache$|^BenchmarkClock$' -cpu 1,2 -benchtime "$btime" -benchmem
gotest bytes -bench '^BenchmarkBytesPerEntry$' -cpu 1 -benchtime 1x
gotest redis -bench '^BenchmarkRedis$' -cpu 2 -benchtime "$btime" -benchmem
gotest postgres -bench '^BenchmarkPostgres$' -cpu 2 -benchtime "$btime" -benchmem
gotest http -bench '^BenchmarkHTTPInProcess$' -cpu 2 -benchtime "$btime" -benchmem
# The bare handler and the middleware in alternating slices of time (see
# bench/interleave_test.go): the HTTP time targets come from these.
gotest http-interleaved -bench '^BenchmarkHTTPInterleaved$' -cpu 2 -benchtime 1x
tx
log "round-trip and statement checks"
(cd bench && go test -count 1 -run 'TestRedisRoundTrips|TestPostgresStatements' -v .) >"$out/checks.txt" 2>&1 || true
grep -E '^(--- |ok|FAIL)' "$out/checks.txt" >&2 || true

# 2. benchstat: every contender against ours (/impl columns, ours first).
for f in cache bytes redis postgres http http-interleaved; do
  "$benchstat" -col /impl "$out/$f.txt" >"$out/$f.benchstat.txt" 2>&1 || true
done
(cd bench && go run ./cmd/benchtargets "$out"/cache.txt "$out"/bytes.txt "$out"/redis.txt "$out"/postgres.txt "$out"/http.txt "$out"/http-interleaved.txt "$out"/tx.txt) >"$out/targets.md"
log "targets:"
cat "$out/targets.md" >&2

# 3. The idemload sweep against idemd on each store, and the chart.
if [ "${BENCH_LOAD:-1}" = 1 ]; then
  bin=$(mktemp -d)
  go build -o "$bin/idemd" ./cmd/idemd
  go build -o "$bin/idemload" ./cmd/idemload
  schema=idembench_load_$$
  pid=
  cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    psql "$pg_url" -q -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
    rm -rf "$bin"
  }
  trap cleanup EXIT
  stores=(memory "$redis_url")
  labels=(memory redis)
  if psql "$pg_url" -q -c "CREATE SCHEMA IF NOT EXISTS $schema" >/dev/null 2>&1; then
    sep='?'
    case $pg_url in *\?*) sep='&' ;; esac
    stores+=("${pg_url}${sep}search_path=$schema")
    labels+=(postgres)
  else
    log "postgres unreachable (or no psql): the sweep skips it"
  fi
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  for i in "${!stores[@]}"; do
    label=${labels[$i]}
    : >"$out/load-$label.json"
    # idemd logs every command; its log is thrown away so that writing it
    # costs the same for every store and fills no disk.
    "$bin/idemd" -addr "127.0.0.1:$port" -store "${stores[$i]}" -ttl 10m >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do
      curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
      sleep 0.1
    done
    for w in ${BENCH_WORKERS:-1 2 4 8 16 32 64}; do
      log "idemload $label, $w workers"
      "$bin/idemload" -url "http://127.0.0.1:$port" -workers "$w" -duration "${BENCH_LOAD_DURATION:-2s}" \
        -dup 0.1 -json -quiet -label "$label" >>"$out/load-$label.json"
    done
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=
  done
  files=()
  for label in "${labels[@]}"; do files+=("$out/load-$label.json"); done
  (cd bench && go run ./cmd/benchchart -o throughput.png \
    -title "idemd throughput by store (idemload, widgets.create, 10% duplicates)" "${files[@]}")
  log "chart: bench/throughput.png"
fi
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/machine.txt"
log "results in $out"
