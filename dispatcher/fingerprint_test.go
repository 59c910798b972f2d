package dispatcher_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/dispatcher"
)

// Payloads are compared by exact value: a retry whose numbers differ in any
// digit is another payload (422 idempotency_key_reused), while spellings of
// one value are the same payload (replayed).
func TestDispatchExactNumbers(t *testing.T) {
	tests := []struct {
		name          string
		first, second string
		wantStatus    int
	}{
		{"ids one apart beyond 2^53", `{"account_id":1234567890123456789}`, `{"account_id":1234567890123456788}`, 422},
		{"2^53+1 and 2^53", `{"n":9007199254740993}`, `{"n":9007199254740992}`, 422},
		{"a digit past a double's precision", `{"amount":0.1}`, `{"amount":0.10000000000000000001}`, 422},
		{"beyond a double's range", `{"n":1e400}`, `{"n":1e401}`, 422},
		{"same id", `{"account_id":1234567890123456789}`, `{"account_id":12345678901234567890e-1}`, 201},
		{"same value, other spellings", `{"amount":100,"rate":0.5}`, `{"rate":5e-1,"amount":1e2}`, 201},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c counter
			d := dispatcher.New(idempotency.NewEngine(idempotency.NewInMemoryStore()))
			d.Register("transfer", c.handle)
			ctx := context.Background()
			status, first := d.Dispatch(ctx, cmd("transfer", "k", "alice", tt.first))
			if status != http.StatusCreated {
				t.Fatalf("first: got %d %s, want 201", status, first)
			}
			status, body := d.Dispatch(ctx, cmd("transfer", "k", "alice", tt.second))
			if tt.wantStatus == 422 {
				wantError(t, status, body, 422, dispatcher.CodeKeyReused)
			} else if status != tt.wantStatus || string(body) != string(first) {
				t.Errorf("retry: got %d %s, want %d %s (the replay)", status, body, tt.wantStatus, first)
			}
			if got := c.runs.Load(); got != 1 {
				t.Errorf("handler ran %d times, want 1", got)
			}
		})
	}
}

// Over HTTP, as idemd serves it.
func TestServeHTTPExactNumbers(t *testing.T) {
	var c counter
	d := dispatcher.New(idempotency.NewEngine(idempotency.NewInMemoryStore()))
	d.Register("transfer", c.handle)
	srv := serve(t, d)
	if first := post(t, srv, "transfer", `{"account_id":1234567890123456789}`, "Idempotency-Key", "k"); first.status != 201 {
		t.Fatalf("first: got %d %s, want 201", first.status, first.body)
	}
	second := post(t, srv, "transfer", `{"account_id":1234567890123456788}`, "Idempotency-Key", "k")
	wantError(t, second.status, []byte(second.body), 422, dispatcher.CodeKeyReused)
	if got := c.runs.Load(); got != 1 {
		t.Errorf("handler ran %d times, want 1", got)
	}
}
