package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// unavailable skips t because a backend cannot be reached, or fails it when
// IDEMPOTENCY_REQUIRE_BACKENDS=1.
func unavailable(t *testing.T, what, env string, err error) {
	t.Helper()
	if os.Getenv("IDEMPOTENCY_REQUIRE_BACKENDS") == "1" {
		t.Fatalf("%s: %v", what, err)
	}
	t.Skipf("%s unavailable (%v); start it or set %s to run this test", what, err, env)
}

const (
	postgresEnv = "IDEMPOTENCY_POSTGRES_URL"
	postgresDef = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
)

// postgresURL returns the URL of the test PostgreSQL server with a schema
// of t's own as its search_path: idemd's tables (pgstore's and the
// dashboard's) go there. The schema is created now and dropped, with
// everything in it, when t ends, after whatever t opens later is closed.
func postgresURL(t *testing.T) string {
	t.Helper()
	base := os.Getenv(postgresEnv)
	if base == "" {
		base = postgresDef
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		unavailable(t, base, postgresEnv, err)
	}
	defer conn.Close(context.Background())
	schema := "idemd_test_" + strings.ToLower(rand.Text())
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("CREATE SCHEMA: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err == nil {
			_, err = conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE")
			conn.Close(context.Background())
		}
		if err != nil {
			t.Errorf("DROP SCHEMA %s: %v", schema, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("%s: %v", postgresEnv, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// backendURL is where a test reaches backend b: for PostgreSQL, a schema
// of the test's own (postgresURL); for Redis, the server, where a secret
// of the test's own (see openBackend) keeps its records apart.
func backendURL(t *testing.T, b backend) string {
	t.Helper()
	if b.env == postgresEnv {
		return postgresURL(t)
	}
	if u := os.Getenv(b.env); u != "" {
		return u
	}
	return b.def
}

// openBackend opens the shared store at url as idemd does, with its
// dashboard, skipping the test when it cannot be reached unless
// IDEMPOTENCY_REQUIRE_BACKENDS=1. secret names the records
// (driver.RecordKey), so each test has a key space of its own.
func openBackend(t *testing.T, b backend, url, secret string) openedStore {
	t.Helper()
	cfg := testConfig()
	cfg.store, cfg.secret, cfg.ttl, cfg.redisClient = url, secret, 10*time.Minute, b.client
	st, err := openStore(context.Background(), cfg, newLogger("text", slog.LevelInfo, t.Output()))
	if err != nil {
		unavailable(t, url, b.env, err)
	}
	t.Cleanup(st.close)
	return st
}

type backend struct{ name, env, def, client string }

var backends = []backend{
	{"redis", "IDEMPOTENCY_REDIS_URL", "redis://127.0.0.1:6379/0", "go-redis"},
	{"redis-rueidis", "IDEMPOTENCY_REDIS_URL", "redis://127.0.0.1:6379/0", "rueidis"},
	{"postgres", postgresEnv, postgresDef, ""},
}

func testSecret(t *testing.T) string {
	return "idemd-test/" + t.Name() + "/" + time.Now().Format(time.RFC3339Nano)
}

func TestContractOnBackends(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			st := openBackend(t, b, backendURL(t, b), testSecret(t))
			_, c := newTestServerFor(t, st)
			testContract(t, c)
		})
	}
}

// Two replicas sharing one backend run a command once between them. On
// Redis each has a dashboard of its own, in memory, so the widgets of both
// together must be one; on PostgreSQL they share one dashboard, in which
// each sees the one widget.
func TestReplicasShareKeys(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			url, secret := backendURL(t, b), testSecret(t)
			var cs []client
			var shared bool
			for range 2 {
				st := openBackend(t, b, url, secret) // a client of its own
				shared = st.dash.where() == dashInPostgres
				_, c := newTestServerFor(t, st)
				cs = append(cs, c)
			}
			if shared != (b.env == postgresEnv) {
				t.Fatalf("dashboard shared: %v, want it shared on PostgreSQL only", shared)
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
			counts := []int{cs[0].widgetCount(t), cs[1].widgetCount(t)}
			switch {
			case shared && (counts[0] != 1 || counts[1] != 1):
				t.Errorf("widgets on the shared dashboard, as each replica lists them: %v, want 1 and 1", counts)
			case !shared && counts[0]+counts[1] != 1:
				t.Errorf("widgets on both replicas: %v, want 1 in all", counts)
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
