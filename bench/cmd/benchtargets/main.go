// Command benchtargets reads `go test -bench` output and prints issue 5's
// targets as a Markdown table: each figure is the median of its runs, and
// every ratio is taken between benchmarks of the same run.
//
// Usage:
//
//	benchtargets results/*.txt
//
// A target whose benchmarks are missing from the input (a backend was not
// running, a benchmark was filtered out) is listed as "not measured".
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
)

// kind says how a target's figure is computed from its benchmarks a and b.
type kind int

const (
	value   kind = iota // a
	diff                // a - b: what a adds to b
	speed               // b / a of times: a's throughput relative to b's
	ratio               // a / b
	ratioUp             // b / a of times, reported as "a is N× faster"
)

type target struct {
	name string
	kind kind
	a, b string // benchmark names as printed, with the -GOMAXPROCS suffix
	unit string // sec/op figures are in ns; allocs/op; B/entry …
	le   bool   // the figure must be ≤ goal (else ≥)
	goal float64
	info bool // reported, no goal
	// ratioFigure: a value that is itself a ratio (printed as N×).
	ratioFigure bool
}

func cache(op, impl string, procs int) string {
	return fmt.Sprintf("BenchmarkCache/op=%s/impl=%s%s", op, impl, suffix(procs))
}

func suffix(procs int) string {
	if procs == 1 {
		return ""
	}
	return "-" + strconv.Itoa(procs)
}

func targets() []target {
	var ts []target
	for _, p := range []int{1, 2} {
		c := fmt.Sprintf(" (-cpu %d)", p)
		hit := cache("LookupHit", "idemkit", p)
		ts = append(ts,
			target{name: "InMemoryStore Lookup hit, allocs/op" + c, a: hit, unit: "allocs/op", le: true, goal: 0},
			target{name: "InMemoryStore Lookup hit, ns/op" + c, a: hit, unit: "ns/op", le: true, goal: 30},
			target{name: "Lookup hit ÷ map+Mutex with time.Now" + c, kind: ratio, a: hit, b: cache("LookupHit", "map-mutex", p), unit: "ns/op", le: true, goal: 1},
			target{name: "Lookup hit ÷ map+RWMutex with time.Now" + c, kind: ratio, a: hit, b: cache("LookupHit", "map-rwmutex", p), unit: "ns/op", info: true},
			target{name: "Lookup hit ÷ expirable LRU Get" + c, kind: ratio, a: hit, b: cache("LookupHit", "lru-expirable", p), unit: "ns/op", le: true, goal: 0.5},
			target{name: "Lookup hit ÷ otter Get" + c, kind: ratio, a: hit, b: cache("LookupHit", "otter", p), unit: "ns/op", info: true},
			target{name: "  (sketch-hash-lru Lookup hit ÷ expirable LRU Get" + c + ")", kind: ratio, a: cache("LookupHit", "sketch-hash-lru", p), b: cache("LookupHit", "lru-expirable", p), unit: "ns/op", info: true},
			target{name: "  (sketch-hash-clock Lookup hit ÷ expirable LRU Get" + c + ")", kind: ratio, a: cache("LookupHit", "sketch-hash-clock", p), b: cache("LookupHit", "lru-expirable", p), unit: "ns/op", info: true},
			target{name: "  (sketch-hash-clock Lookup hit, ns/op" + c + ")", a: cache("LookupHit", "sketch-hash-clock", p), unit: "ns/op", info: true},
			target{name: "Store (overwrite), ns/op" + c, a: cache("Store", "idemkit", p), unit: "ns/op", le: true, goal: 130},
			target{name: "Insert with eviction, ns/op" + c, a: cache("InsertEvict", "idemkit", p), unit: "ns/op", le: true, goal: 250},
			target{name: "Insert with eviction, allocs/op" + c, a: cache("InsertEvict", "idemkit", p), unit: "allocs/op", le: true, goal: 1},
			target{name: "90/10 mix ÷ expirable LRU" + c, kind: ratio, a: cache("Mix90-10", "idemkit", p), b: cache("Mix90-10", "lru-expirable", p), unit: "ns/op", info: true},
			target{name: "90/10 mix ÷ otter" + c, kind: ratio, a: cache("Mix90-10", "idemkit", p), b: cache("Mix90-10", "otter", p), unit: "ns/op", info: true},
		)
	}
	ts = append(ts,
		target{name: "time.Now (reference)", a: "BenchmarkClock/time.Now", unit: "ns/op", info: true},
		target{name: "bytes per entry beyond key and body, 100k entries", a: "BenchmarkBytesPerEntry/impl=idemkit", unit: "B/entry", le: true, goal: 160},
		target{name: "  (otter, for reference)", a: "BenchmarkBytesPerEntry/impl=otter", unit: "B/entry", info: true},
		target{name: "  (expirable LRU, for reference)", a: "BenchmarkBytesPerEntry/impl=lru-expirable", unit: "B/entry", info: true},
		target{name: "  (map+RWMutex, for reference)", a: "BenchmarkBytesPerEntry/impl=map-rwmutex", unit: "B/entry", info: true},
		target{name: "  (sketch-hash-lru, for reference)", a: "BenchmarkBytesPerEntry/impl=sketch-hash-lru", unit: "B/entry", info: true},
	)
	inp := func(path, impl string) string {
		return "BenchmarkHTTPInProcess/path=" + path + "/impl=" + impl + "-2"
	}
	il := func(mode, path string) string {
		if mode == "loopback" {
			path += "/conns=64"
		}
		return "BenchmarkHTTPInterleaved/mode=" + mode + "/path=" + path + "-2"
	}
	ts = append(ts,
		target{name: "middleware in-process: replay adds, ns (interleaved)", a: il("inprocess", "replay"), unit: "adds-ns/op", le: true, goal: 300},
		target{name: "middleware in-process: replay adds, allocs", kind: diff, a: inp("replay", "idemhttp"), b: inp("replay", "bare"), unit: "allocs/op", le: true, goal: 4},
		target{name: "middleware in-process: fresh adds, ns (interleaved)", a: il("inprocess", "fresh"), unit: "adds-ns/op", le: true, goal: 1000},
		target{name: "middleware in-process: fresh adds, allocs", kind: diff, a: inp("fresh", "idemhttp"), b: inp("fresh", "bare"), unit: "allocs/op", le: true, goal: 8},
		target{name: "middleware in-process: replay adds, ns (sequential, for reference)", kind: diff, a: inp("replay", "idemhttp"), b: inp("replay", "bare"), unit: "ns/op", info: true},
		target{name: "middleware in-process: fresh adds, ns (sequential, for reference)", kind: diff, a: inp("fresh", "idemhttp"), b: inp("fresh", "bare"), unit: "ns/op", info: true},
		target{name: "middleware over loopback, 64 conns: replay throughput ÷ bare (interleaved)", kind: value, a: il("loopback", "replay"), unit: "throughput-ratio", goal: 0.95, ratioFigure: true},
		target{name: "middleware over loopback, 64 conns: fresh throughput ÷ bare (interleaved)", kind: value, a: il("loopback", "fresh"), unit: "throughput-ratio", goal: 0.92, ratioFigure: true},
	)
	rd := func(op, impl string, par int) string {
		return fmt.Sprintf("BenchmarkRedis/op=%s/impl=%s/par=%d-2", op, impl, par)
	}
	for _, par := range []int{1, 64} {
		c := fmt.Sprintf(" (%d parallel)", par)
		ts = append(ts,
			target{name: "redisstore replay throughput ÷ raw GET" + c, kind: speed, a: rd("Replay", "redisstore", par), b: rd("Replay", "raw-GET", par), unit: "ns/op", goal: 0.9},
			target{name: "redisstore begin+complete throughput ÷ raw SET NX PX" + c, kind: speed, a: rd("Claim", "redisstore-begin+complete", par), b: rd("Claim", "raw-SETNX", par), unit: "ns/op", goal: 0.45},
			target{name: "redisstore replay, allocs/op" + c, a: rd("Replay", "redisstore", par), unit: "allocs/op", le: true, goal: 10},
			target{name: "redisstore begin+complete, allocs/op" + c, a: rd("Claim", "redisstore-begin+complete", par), unit: "allocs/op", le: true, goal: 10},
			target{name: "rueidis GET ÷ go-redis GET, speed-up" + c, kind: ratioUp, a: rd("Replay", "rueidis-GET", par), b: rd("Replay", "raw-GET", par), unit: "ns/op", info: par == 1, goal: 1.3},
			target{name: "rueidis EVALSHA ÷ go-redis EVALSHA, speed-up" + c, kind: ratioUp, a: rd("Replay", "rueidis-EVALSHA-GET", par), b: rd("Replay", "raw-EVALSHA-GET", par), unit: "ns/op", info: par == 1, goal: 1.3},
			target{name: "rueidis SET NX ÷ go-redis SET NX, speed-up" + c, kind: ratioUp, a: rd("Claim", "rueidis-SETNX", par), b: rd("Claim", "raw-SETNX", par), unit: "ns/op", info: par == 1, goal: 1.3},
		)
	}
	pg := func(op, impl string) string { return "BenchmarkPostgres/op=" + op + "/impl=" + impl + "/par=8-2" }
	ts = append(ts,
		target{name: "pgstore replay throughput ÷ raw primary-key SELECT (8 parallel)", kind: speed, a: pg("Replay", "pgstore"), b: pg("Replay", "raw-SELECT"), unit: "ns/op", goal: 0.9},
		target{name: "pgstore claim throughput ÷ raw INSERT … ON CONFLICT DO NOTHING RETURNING (8 parallel)", kind: speed, a: pg("Claim", "pgstore-begin"), b: pg("Claim", "raw-INSERT"), unit: "ns/op", goal: 0.85},
		target{name: "pgstore claim with synchronous_commit off, speed-up over on", kind: ratioUp, a: pg("Claim", "pgstore-begin-sync-commit-off"), b: pg("Claim", "pgstore-begin"), unit: "ns/op", info: true},
		target{name: "pgstore replay, allocs/op", a: pg("Replay", "pgstore"), unit: "allocs/op", info: true},
		target{name: "pgstore claim, allocs/op", a: pg("Claim", "pgstore-begin"), unit: "allocs/op", info: true},
	)
	// Issue 11: transactional commands, interleaved (each round's "ratio" is
	// within the round; the figure is the median of the rounds').
	tx := func(pair, sync string) string { return "BenchmarkTxInterleaved/pair=" + pair + "/sync=" + sync + "-2" }
	ts = append(ts,
		target{name: "pgstore.Run fresh throughput ÷ bare transaction, same INSERT (8 parallel, interleaved)", a: tx("write", "default"), unit: "ratio", goal: 0.8, ratioFigure: true},
		target{name: "pgstore.Run replay throughput ÷ primary-key SELECT (8 parallel, interleaved)", a: tx("read", "default"), unit: "ratio", goal: 0.9, ratioFigure: true},
		target{name: "pgstore.Run fresh ÷ bare transaction, synchronous_commit off (8 parallel, interleaved)", a: tx("write", "off"), unit: "ratio", info: true, ratioFigure: true},
	)
	return ts
}

// results maps "name unit" to every value measured.
type results map[string][]float64

// parse reads benchmark lines: name, iterations, then value-unit pairs.
// Times are kept in ns/op.
func parse(r io.Reader, res results) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		if _, err := strconv.ParseInt(f[1], 10, 64); err != nil {
			continue
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				break
			}
			res[f[0]+" "+f[i+1]] = append(res[f[0]+" "+f[i+1]], v)
		}
	}
	return sc.Err()
}

func median(vs []float64) float64 {
	s := slices.Clone(vs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// figure computes t's figure, or false when a benchmark is missing.
func (t target) figure(res results) (float64, bool) {
	a, ok := res[t.a+" "+t.unit]
	if !ok {
		return 0, false
	}
	if t.kind == value {
		return median(a), true
	}
	b, ok := res[t.b+" "+t.unit]
	if !ok {
		return 0, false
	}
	ma, mb := median(a), median(b)
	switch t.kind {
	case diff:
		return ma - mb, true
	case speed, ratioUp:
		return mb / ma, true
	default:
		return ma / mb, true
	}
}

func format(t target, v float64) string {
	switch {
	case t.kind == speed || t.kind == ratio || t.kind == ratioUp || t.ratioFigure:
		return fmt.Sprintf("%.2f×", v)
	case t.unit == "ns/op" || t.unit == "adds-ns/op":
		return fmt.Sprintf("%.0f ns", v)
	case t.unit == "allocs/op":
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.0f %s", v, t.unit)
}

func main() {
	res := results{}
	for _, name := range os.Args[1:] {
		f, err := os.Open(name)
		if err == nil {
			err = parse(f, res)
			f.Close()
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "benchtargets:", err)
			os.Exit(1)
		}
	}
	fmt.Println("| target | measured | goal | met |")
	fmt.Println("| --- | ---: | ---: | --- |")
	for _, t := range targets() {
		v, ok := t.figure(res)
		goal, met := "", ""
		switch {
		case t.info:
			goal, met = "(reported)", ""
		case t.le:
			goal = "≤ " + format(t, t.goal)
			met = verdict(v <= t.goal)
		default:
			goal = "≥ " + format(t, t.goal)
			met = verdict(v >= t.goal)
		}
		measured := format(t, v)
		if !ok {
			measured, met = "not measured", ""
		}
		fmt.Printf("| %s | %s | %s | %s |\n", t.name, measured, goal, met)
	}
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**not met**"
}
