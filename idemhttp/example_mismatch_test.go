package idemhttp_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/idemhttp"
)

// The same key with the same JSON payload, re-encoded, replays; with another
// payload it is refused with 422.
func ExampleDefaultFingerprint() {
	engine := idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true))
	mw := idemhttp.New(engine)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
	}))
	for _, body := range []string{
		`{"amount":1000,"currency":"EUR"}`,
		"{\n  \"currency\": \"EUR\",\n  \"amount\": 1000\n}",
		`{"amount":9999,"currency":"EUR"}`,
	} {
		req := httptest.NewRequest("POST", "/charges", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", "order-42")
		req.Header.Set("Authorization", "Bearer customer-7")
		rr := httptest.NewRecorder()
		mw.ServeHTTP(rr, req)
		fmt.Println(rr.Code, "replayed:", rr.Header().Get("Idempotent-Replayed") == "true")
	}
	// Output:
	// 201 replayed: false
	// 201 replayed: true
	// 422 replayed: false
}
