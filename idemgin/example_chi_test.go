package idemgin_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/go-chi/chi/v5"
	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/idemhttp"
)

// chi takes idemhttp's middleware as it is.
func Example_chi() {
	engine := idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true))
	r := chi.NewRouter()
	r.Use(idemhttp.New(engine))
	r.Post("/orders/{id}/pay", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "paid %s", chi.URLParam(r, "id"))
	})

	srv := httptest.NewServer(r)
	defer srv.Close()
	postTwice(srv.URL+"/orders/o-7/pay", "k1")
	// Output:
	// 201 Created paid o-7 replayed: false
	// 201 Created paid o-7 replayed: true
}
