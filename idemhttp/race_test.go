//go:build race

package idemhttp

// raceEnabled: the race detector changes allocation counts (sync.Pool drops
// pooled values at random), so allocation tests skip under it.
const raceEnabled = true
