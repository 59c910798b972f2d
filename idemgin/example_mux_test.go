package idemgin_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/gorilla/mux"
	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/idemhttp"
)

// gorilla/mux takes idemhttp's middleware as it is.
func Example_gorillaMux() {
	engine := idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true))
	r := mux.NewRouter()
	r.Use(idemhttp.New(engine))
	r.HandleFunc("/orders/{id}/pay", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "paid %s", mux.Vars(r)["id"])
	}).Methods(http.MethodPost)

	srv := httptest.NewServer(r)
	defer srv.Close()
	postTwice(srv.URL+"/orders/o-7/pay", "k1")
	// Output:
	// 201 Created paid o-7 replayed: false
	// 201 Created paid o-7 replayed: true
}
