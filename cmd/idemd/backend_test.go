package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"
)

// openBackend opens the shared store at the URL in the environment variable
// env (def when unset) as idemd does, skipping the test when it cannot be
// reached unless IDEMPOTENCY_REQUIRE_BACKENDS=1. secret names the records
// (driver.RecordKey), so each test has a key space of its own.
func openBackend(t *testing.T, env, def, secret, redisClient string) openedStore {
	t.Helper()
	url := os.Getenv(env)
	if url == "" {
		url = def
	}
	cfg := testConfig()
	cfg.store, cfg.secret, cfg.ttl, cfg.redisClient = url, secret, 10*time.Minute, redisClient
	st, err := openStore(context.Background(), cfg, newLogger("text", slog.LevelInfo, t.Output()))
	if err != nil {
		if os.Getenv("IDEMPOTENCY_REQUIRE_BACKENDS") == "1" {
			t.Fatalf("%s: %v", url, err)
		}
		t.Skipf("%s unavailable (%v); start it or set %s to run this test", url, err, env)
	}
	t.Cleanup(st.close)
	return st
}

var backends = []struct{ name, env, def, client string }{
	{"redis", "IDEMPOTENCY_REDIS_URL", "redis://127.0.0.1:6379/0", "go-redis"},
	{"redis-rueidis", "IDEMPOTENCY_REDIS_URL", "redis://127.0.0.1:6379/0", "rueidis"},
	{"postgres", "IDEMPOTENCY_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", ""},
}

func TestContractOnBackends(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			secret := "idemd-test/" + t.Name() + "/" + time.Now().Format(time.RFC3339Nano)
			st := openBackend(t, b.env, b.def, secret, b.client)
			_, c := newTestServerOn(t, st.store)
			testContract(t, c)
		})
	}
}

// Two replicas sharing one backend run a command once between them: each
// has its own dashboard, so the widgets of both together must be one.
func TestReplicasShareKeys(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			secret := "idemd-test/" + t.Name() + "/" + time.Now().Format(time.RFC3339Nano)
			var cs []client
			for range 2 {
				st := openBackend(t, b.env, b.def, secret, b.client) // a client of its own
				_, c := newTestServerOn(t, st.store)
				cs = append(cs, c)
			}
			const n = 60
			replies := make([]reply, n)
			errs := make([]error, n)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					<-start
					replies[i], errs[i] = cs[i%2].send("widgets.create", `{"name":"shared"}`, "Idempotency-Key", "replicas-1")
				})
			}
			close(start)
			wg.Wait()
			var created string
			for i, r := range replies {
				switch {
				case errs[i] != nil:
					t.Errorf("request %d: %v", i, errs[i])
				case r.status == 201 && created == "":
					created = r.body
				case r.status == 201 && r.body != created:
					t.Errorf("request %d: 201 body %s differs from %s", i, r.body, created)
				case r.status != 201 && r.status != 409:
					t.Errorf("request %d: got %d %s, want 201 or 409", i, r.status, r.body)
				}
			}
			if total := cs[0].widgetCount(t) + cs[1].widgetCount(t); total != 1 {
				t.Errorf("widgets on both replicas: %d, want 1", total)
			}
			// A later retry on either replica replays the same bytes.
			for i, c := range cs {
				r := c.post(t, "widgets.create", `{"name":"shared"}`, "Idempotency-Key", "replicas-1")
				if r.body != created || r.header.Get("Idempotent-Replayed") != "true" {
					t.Errorf("replica %d: got %d %s, want the replay of %s", i, r.status, r.body, created)
				}
			}
			var w struct{ ID string }
			if err := json.Unmarshal([]byte(created), &struct {
				Data *struct{ ID string } `json:"data"`
			}{&w}); err != nil || w.ID == "" {
				t.Errorf("created %s: no data.id (%v)", created, err)
			}
		})
	}
}
