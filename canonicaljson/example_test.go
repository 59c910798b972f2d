package canonicaljson_test

import (
	"fmt"

	"github.com/idemkit/idempotency/canonicaljson"
)

// Spellings of one payload share a canonical form; payloads that differ in
// any digit do not.
func ExampleCanonical() {
	for _, in := range []string{
		`{"currency": "EUR", "amount": 1000, "rate": 0.50}`,
		`{"amount":1e3,"rate":5e-1,"currency":"\u0045UR"}`,
		`{"account_id":1234567890123456789}`,
		`{"account_id":1234567890123456788}`,
		`{"a":1,"a":2}`,
	} {
		out, err := canonicaljson.Canonical([]byte(in))
		if err != nil {
			fmt.Println("error:", err)
			continue
		}
		fmt.Println(string(out))
	}
	// Output:
	// {"amount":1000,"currency":"EUR","rate":0.5}
	// {"amount":1000,"currency":"EUR","rate":0.5}
	// {"account_id":1234567890123456789}
	// {"account_id":1234567890123456788}
	// error: canonicaljson: duplicate object member name "a"
}
