//go:build race

package canonicaljson_test

// raceEnabled: the race detector changes allocation counts (sync.Pool drops
// items on purpose), so allocation tests do not hold under it.
const raceEnabled = true
