package idemhttp_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/idemhttp"
)

// TestTryAgainLaterNotRecorded: 408, 425 and 429 tell the client to come
// back; replaying them for a day would refuse every retry. The key is
// released and the retry runs the handler.
func TestTryAgainLaterNotRecorded(t *testing.T) {
	for _, status := range []int{http.StatusRequestTimeout, http.StatusTooEarly, http.StatusTooManyRequests} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			runs := 0
			mw := idemhttp.New(idempotency.NewEngine(idempotency.NewInMemoryStore()))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				runs++
				if runs == 1 {
					w.Header().Set("Retry-After", "1")
					w.WriteHeader(status)
					return
				}
				w.WriteHeader(http.StatusCreated)
			}))
			for i, want := range []int{status, http.StatusCreated, http.StatusCreated} {
				r := httptest.NewRequest(http.MethodPost, "/charges", strings.NewReader(`{"amount":1}`))
				r.Header.Set("Idempotency-Key", "k")
				r.Header.Set("Authorization", "Bearer alice")
				w := httptest.NewRecorder()
				mw.ServeHTTP(w, r)
				if w.Code != want {
					t.Fatalf("request %d = %d, want %d", i+1, w.Code, want)
				}
			}
			if runs != 2 {
				t.Fatalf("handler ran %d times, want 2 (the %d released the key, the 201 was replayed)", runs, status)
			}
		})
	}
}
