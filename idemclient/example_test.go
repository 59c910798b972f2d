package idemclient_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/idemclient"
	"github.com/idemkit/idempotency/idemhttp"
)

// The first answer is lost on the way back; the Transport re-sends the
// request with the same key and gets the recorded answer. The charge runs
// once.
func ExampleNew() {
	engine := idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true))
	charges := 0
	charge := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		charges++
		w.WriteHeader(http.StatusCreated)
		fmt.Fprint(w, `{"id":"ch_1"}`)
	})
	var lost atomic.Bool
	loseFirst := func(next http.Handler) http.Handler { // a network that drops one answer
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if lost.Swap(true) {
				next.ServeHTTP(w, r)
				return
			}
			next.ServeHTTP(httptest.NewRecorder(), r)
			conn, _, _ := http.NewResponseController(w).Hijack()
			conn.Close()
		})
	}
	srv := httptest.NewServer(loseFirst(idemhttp.New(engine)(charge)))
	defer srv.Close()

	client := &http.Client{Transport: idemclient.New()}
	req, _ := http.NewRequest("POST", srv.URL+"/charges", strings.NewReader(`{"amount":1000}`))
	req.Header.Set("Authorization", "Bearer customer-7")
	resp, err := client.Do(req)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.Status, string(body))
	fmt.Println("replayed:", idemclient.Replayed(resp), "attempts:", idemclient.Attempts(resp))
	fmt.Println("charges:", charges)
	// Output:
	// 201 Created {"id":"ch_1"}
	// replayed: true attempts: 2
	// charges: 1
}
