package idemhttp_test

import (
	"fmt"

	"github.com/idemkit/idempotency/idemhttp"
)

// Keys are accepted quoted (a structured-field string) or bare.
func ExampleParseKey() {
	for _, values := range [][]string{
		{`"8e03978e-40d5"`},
		{`8e03978e-40d5`},
		{`"say \"hi\""`},
		{`"a", "b"`},
		nil,
	} {
		key, err := idemhttp.ParseKey(values)
		fmt.Printf("%q %v\n", key, err)
	}
	// Output:
	// "8e03978e-40d5" <nil>
	// "8e03978e-40d5" <nil>
	// "say \"hi\"" <nil>
	// "" idempotency: invalid key: text after the closing quote (lists and parameters are not accepted)
	// "" idemhttp: no Idempotency-Key header
}
