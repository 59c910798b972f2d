//go:build race

package reliability

// raceEnabled reports that the race detector is on; it changes allocation
// counts, so allocation checks are skipped under it.
const raceEnabled = true
