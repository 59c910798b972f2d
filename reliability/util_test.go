package reliability

import (
	"os"
	"strconv"
	"time"
)

// soakFactor is IDEMPOTENCY_SOAK: how many times heavier the soak variants
// of the tests run (scripts/soak.sh sets it). Unset or invalid, 1.
func soakFactor() int {
	n, err := strconv.Atoi(os.Getenv("IDEMPOTENCY_SOAK"))
	if err != nil || n < 1 {
		return 1
	}
	return n
}

// scaled returns n times the soak factor.
func scaled(n int) int { return n * soakFactor() }

// scaledDuration returns d times the soak factor.
func scaledDuration(d time.Duration) time.Duration { return d * time.Duration(soakFactor()) }
