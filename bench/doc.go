// Package bench compares idemkit's stores and middleware with their peers and
// with raw floors, measured in the same run so that every figure is a ratio.
// It is its own module, so that the peer libraries (otter, golang-lru,
// rueidis, gonum/plot) never enter the main go.mod.
//
// Everything here is a benchmark or a test: run it with ../scripts/bench.sh,
// which runs the comparison with -count 5 and summarises it with benchstat
// (see ../BENCHMARKS.md for the commands and the latest numbers). The Redis
// and PostgreSQL benchmarks read IDEMPOTENCY_REDIS_URL and
// IDEMPOTENCY_POSTGRES_URL (defaults redis://127.0.0.1:6379/0 and
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable) and skip when the
// server is unreachable. The chart program is in ./cmd/benchchart.
//
// The transactional commands of issue 11 (pgstore.Run against the bare
// transaction and a primary-key SELECT) are in pgtx_test.go, run by
// ../scripts/bench.sh tx; the sketches and cost breakdowns that explain
// them are in pgtx_sketch_test.go (../scripts/bench.sh txprofile), and
// TestTxCommitsPerOp counts their commits in the WAL.
//
// The sizing figures (bytes per record in Redis and PostgreSQL) come from
// the program in ./sizing, run by ../scripts/sizing.sh with the claims-per-
// second runs; neither runs under go test.
package bench
