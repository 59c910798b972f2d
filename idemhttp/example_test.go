package idemhttp_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/idemhttp"
)

// A retried POST runs once; the retry gets the recorded response, marked
// with Idempotent-Replayed.
func ExampleNew() {
	engine := idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true))
	charges := 0
	charge := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		charges++
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Location", "/charges/ch_1")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprint(w, `{"id":"ch_1","amount":1000}`)
	})
	mux := http.NewServeMux()
	mux.Handle("POST /charges", idemhttp.New(engine)(charge)) // after authentication

	srv := httptest.NewServer(mux)
	defer srv.Close()

	for range 2 { // the client retries once
		req, _ := http.NewRequest("POST", srv.URL+"/charges", strings.NewReader(`{"amount":1000}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", `"order-42"`)
		req.Header.Set("Authorization", "Bearer customer-7") // the caller
		resp, err := srv.Client().Do(req)
		if err != nil {
			panic(err)
		}
		fmt.Println(resp.Status, resp.Header.Get("Location"), readBody(resp), "replayed:", resp.Header.Get("Idempotent-Replayed") == "true")
	}
	fmt.Println("charges:", charges)
	// Output:
	// 201 Created /charges/ch_1 {"id":"ch_1","amount":1000} replayed: false
	// 201 Created /charges/ch_1 {"id":"ch_1","amount":1000} replayed: true
	// charges: 1
}

func readBody(resp *http.Response) string {
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		panic(err)
	}
	return string(b)
}
