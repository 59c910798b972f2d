package reliability

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Ledger counts the side effects of commands, outside any store: a handler
// under test calls Record (or RecordFenced) at the point where a real
// command would charge a card or write a row. Its headline check is that no
// (key, identity) pair has more than one effect, and that every pair whose
// command was answered with a success has exactly one.
//
// The zero value is ready to use. A Ledger is safe for concurrent use.
type Ledger struct {
	mu      sync.Mutex
	effects map[string]int
	fences  map[string]uint64 // highest fence accepted per pair, for RecordFenced
	stale   int
}

// Pair names the ledger entry of (key, identity). The encoding is
// injective: ("a b", "c") and ("a", "b c") are different pairs.
func Pair(key, identity string) string {
	return strconv.Quote(key) + " " + strconv.Quote(identity)
}

// Record counts one effect for pair and returns how many it now has.
func (l *Ledger) Record(pair string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.effects == nil {
		l.effects = make(map[string]int)
	}
	l.effects[pair]++
	return l.effects[pair]
}

// RecordFenced counts one effect for pair made under the claim's fencing
// number, unless an effect with a higher fence was already counted for the
// pair; it reports whether the effect was accepted. It models a downstream
// system that refuses writes from a stale holder (one whose lease ran out and
// whose key was taken over), as the fence handed to a command allows. A refused effect is
// counted by Rejected, not by Count.
func (l *Ledger) RecordFenced(pair string, fence uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fences == nil {
		l.fences = make(map[string]uint64)
	}
	if fence < l.fences[pair] {
		l.stale++
		return false
	}
	l.fences[pair] = fence
	if l.effects == nil {
		l.effects = make(map[string]int)
	}
	l.effects[pair]++
	return true
}

// Count returns the number of effects counted for pair.
func (l *Ledger) Count(pair string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.effects[pair]
}

// Rejected returns how many effects RecordFenced refused as stale.
func (l *Ledger) Rejected() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stale
}

// Pairs returns how many pairs have at least one effect.
func (l *Ledger) Pairs() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.effects)
}

// Histogram returns, for each number of effects n > 0, how many pairs
// have n.
func (l *Ledger) Histogram() map[int]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	h := make(map[int]int)
	for _, n := range l.effects {
		h[n]++
	}
	return h
}

// Total returns the number of effects counted over all pairs.
func (l *Ledger) Total() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, c := range l.effects {
		n += c
	}
	return n
}

// Check verifies the ledger's headline property: every pair has at most one
// effect, and every pair in succeeded (the pairs whose command some caller
// saw succeed, executed or replayed) has exactly one. The error lists the
// first violations, sorted.
func (l *Ledger) Check(succeeded []string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var bad []string
	for p, n := range l.effects {
		if n > 1 {
			bad = append(bad, fmt.Sprintf("%s ran %d times", p, n))
		}
	}
	for _, p := range succeeded {
		if l.effects[p] == 0 {
			bad = append(bad, fmt.Sprintf("%s succeeded but never ran", p))
		}
	}
	if len(bad) == 0 {
		return nil
	}
	slices.Sort(bad)
	n := len(bad)
	const show = 10
	if n > show {
		bad = append(bad[:show], "…")
	}
	return fmt.Errorf("ledger: %d violations: %s", n, strings.Join(bad, "; "))
}
