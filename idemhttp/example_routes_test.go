package idemhttp_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/idemhttp"
)

// Per-route settings: one middleware per setting, each route wrapped with
// the one it needs. Errors are RFC 9457 problems.
func ExampleWithRequired() {
	engine := idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true))
	required := idemhttp.New(engine, idemhttp.WithRequired(true))
	optional := idemhttp.New(engine)
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "done") })

	mux := http.NewServeMux()
	mux.Handle("POST /payments", required(ok))
	mux.Handle("POST /notes", optional(ok))

	for _, path := range []string{"/payments", "/notes"} {
		rr := httptest.NewRecorder()
		mux.ServeHTTP(rr, httptest.NewRequest("POST", path, strings.NewReader(`{}`))) // no key
		fmt.Println(path, rr.Code, rr.Header().Get("Content-Type"))
		fmt.Println(rr.Body)
	}
	// Output:
	// /payments 400 application/problem+json
	// {"type":"https://github.com/idemkit/idempotency/problems/idempotency-key-missing","title":"Idempotency-Key is missing","status":400,"detail":"This operation is idempotent and requires an Idempotency-Key header."}
	// /notes 200 text/plain; charset=utf-8
	// done
}
