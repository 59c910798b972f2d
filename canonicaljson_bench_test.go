package idempotency_test

import (
	"testing"

	"github.com/idemkit/idempotency"
)

func BenchmarkCanonicalJSONSmall(b *testing.B) {
	in := []byte(`{"name":"gear","amount":1000,"currency":"EUR","tags":["a","b"]}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := idempotency.CanonicalJSON(in); err != nil {
			b.Fatal(err)
		}
	}
}
