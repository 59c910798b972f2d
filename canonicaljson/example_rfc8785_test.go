package canonicaljson_test

import (
	"fmt"

	"github.com/idemkit/idempotency/canonicaljson"
)

// RFC 8785 reads numbers as doubles: two account ids that differ in their
// last digit get one form, which is why fingerprints use Canonical.
func ExampleRFC8785() {
	for _, in := range []string{
		`{"account_id":1234567890123456789, "b":[1.0, 1E30]}`,
		`{"account_id":1234567890123456788, "b":[1, 1e30]}`,
	} {
		out, err := canonicaljson.RFC8785([]byte(in))
		if err != nil {
			fmt.Println("error:", err)
			continue
		}
		fmt.Println(string(out))
	}
	// Output:
	// {"account_id":1234567890123456800,"b":[1,1e+30]}
	// {"account_id":1234567890123456800,"b":[1,1e+30]}
}
