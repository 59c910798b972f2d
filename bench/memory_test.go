package bench

import (
	"runtime"
	"testing"
)

// BenchmarkBytesPerEntry reports the heap each contender holds per entry
// beyond the key and the body (both allocated before, shared with the
// caller), on 100k entries, from runtime.MemStats after GC. Run it with
// -benchtime 1x: each iteration builds a whole cache.
func BenchmarkBytesPerEntry(b *testing.B) {
	const n = 100_000
	keys := benchKeys("mem", n)
	body := benchBody()
	for _, c := range contenders {
		b.Run("impl="+c.name, func(b *testing.B) {
			var per float64
			for b.Loop() {
				before := heapAfterGC()
				cc := c.make(n)
				for _, k := range keys {
					cc.set(k, body)
				}
				per = float64(int64(heapAfterGC())-int64(before)) / n
				runtime.KeepAlive(cc)
			}
			b.ReportMetric(per, "B/entry")
		})
	}
}

func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
