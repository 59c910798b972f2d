package main

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/idemkit/idempotency/dispatcher"
)

// testContract checks the dashboard contract (README's "Run the server")
// against a running idemd, in-process or the
// built binary. Each case uses its own keys; widget counts are compared
// before and after, since the dashboard is shared.
func testContract(t *testing.T, c client) {
	t.Run("replay byte for byte", func(t *testing.T) {
		before := c.widgetCount(t)
		first := c.post(t, "widgets.create", `{"name":"gear"}`, "Idempotency-Key", "replay-1")
		var w struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		}
		first.data(t, http.StatusCreated, &w)
		if w.ID == "" || w.Name != "gear" {
			t.Errorf("created %+v, want an id and name gear", w)
		}
		if got := first.header.Get("Idempotent-Replayed"); got != "" {
			t.Errorf("first answer has Idempotent-Replayed %q", got)
		}
		// Same payload, other spelling; the key quoted as a structured-field string.
		again := c.post(t, "widgets.create", "{ \"name\" : \"gear\" }", "Idempotency-Key", `"replay-1"`)
		if again.status != first.status || again.body != first.body {
			t.Errorf("replay: got %d %q, want %d %q", again.status, again.body, first.status, first.body)
		}
		if got := again.header.Get("Idempotent-Replayed"); got != "true" {
			t.Errorf("replay: Idempotent-Replayed = %q, want true", got)
		}
		if got := c.widgetCount(t) - before; got != 1 {
			t.Errorf("widgets created: %d, want 1", got)
		}
	})

	t.Run("422 on reuse with another payload", func(t *testing.T) {
		c.post(t, "widgets.create", `{"name":"a"}`, "Idempotency-Key", "reuse-1").data(t, 201, &struct{}{})
		c.post(t, "widgets.create", `{"name":"b"}`, "Idempotency-Key", "reuse-1").wantError(t, 422, dispatcher.CodeKeyReused)
		c.post(t, "reports.generate", `{"ms":0}`, "Idempotency-Key", "reuse-1").wantError(t, 422, dispatcher.CodeKeyReused)
	})

	t.Run("400 on missing and malformed keys", func(t *testing.T) {
		before := c.widgetCount(t)
		c.post(t, "widgets.create", `{"name":"a"}`).wantError(t, 400, dispatcher.CodeKeyMissing)
		c.post(t, "widgets.create", `{"name":"a"}`, "Idempotency-Key", strings.Repeat("k", 300)).
			wantError(t, 400, dispatcher.CodeKeyInvalid)
		c.post(t, "widgets.create", `{"name":"a"}`, "Idempotency-Key", `"unterminated`).
			wantError(t, 400, dispatcher.CodeKeyInvalid)
		if got := c.widgetCount(t) - before; got != 0 {
			t.Errorf("widgets created: %d, want 0", got)
		}
	})

	t.Run("other refusals", func(t *testing.T) {
		c.post(t, "widgets.explode", `{}`, "Idempotency-Key", "x").wantError(t, 404, dispatcher.CodeUnknownCommand)
		c.post(t, "widgets.create", `{"name":`, "Idempotency-Key", "bad-json").wantError(t, 400, dispatcher.CodeInvalidJSON)
		big := `{"name":"` + strings.Repeat("x", 1<<20) + `"}`
		c.post(t, "widgets.create", big, "Idempotency-Key", "big").wantError(t, 413, dispatcher.CodePayloadTooLarge)
		r, err := c.http.Get(c.base + "/v1/commands/widgets.list")
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != 405 || r.Header.Get("Allow") != "POST" {
			t.Errorf("GET a command: got %d Allow=%q, want 405 Allow=POST", r.StatusCode, r.Header.Get("Allow"))
		}
	})

	t.Run("demo command validation is recorded", func(t *testing.T) {
		tests := []struct {
			name, command, payload, code string
		}{
			{"empty name", "widgets.create", `{"name":""}`, "invalid_name"},
			{"blank name", "widgets.create", `{"name":"  "}`, "invalid_name"},
			{"name not a string", "widgets.create", `{"name":5}`, "invalid_name"},
			{"no name", "widgets.create", `{}`, "invalid_name"},
			{"NUL in name", "widgets.create", `{"name":"a\u0000b"}`, "invalid_name"},
			{"unknown field", "widgets.create", `{"name":"a","color":"red"}`, dispatcher.CodeInvalidPayload},
			{"not an object", "widgets.create", `["a"]`, dispatcher.CodeInvalidPayload},
			{"negative ms", "reports.generate", `{"ms":-1}`, "invalid_ms"},
			{"too many ms", "reports.generate", `{"ms":10001}`, "invalid_ms"},
			{"fractional ms", "reports.generate", `{"ms":1.5}`, "invalid_ms"},
			{"list with fields", "widgets.list", `{"page":2}`, dispatcher.CodeInvalidPayload},
		}
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				key := "validation-" + strconv.Itoa(i)
				first := c.post(t, tt.command, tt.payload, "Idempotency-Key", key)
				first.wantError(t, 400, tt.code)
				if tt.command == "widgets.list" {
					return // not keyed: nothing to replay
				}
				again := c.post(t, tt.command, tt.payload, "Idempotency-Key", key)
				if again.body != first.body || again.header.Get("Idempotent-Replayed") != "true" {
					t.Errorf("retry: got %d %s (replayed %q), want the recorded 400",
						again.status, again.body, again.header.Get("Idempotent-Replayed"))
				}
			})
		}
	})

	t.Run("identity isolation", func(t *testing.T) {
		before := c.widgetCount(t)
		tok := t.Name() // unique to this run of the suite
		ids := map[string]bool{}
		for _, who := range []string{"alice", "bob", "alice"} {
			var w struct{ ID string }
			c.post(t, "widgets.create", `{"name":"mine"}`, "Idempotency-Key", "same-key",
				"Authorization", "Bearer "+tok+who).data(t, 201, &w)
			ids[w.ID] = true
		}
		if len(ids) != 2 {
			t.Errorf("two tokens, three requests, one key: got widget ids %v, want 2 distinct", ids)
		}
		if got := c.widgetCount(t) - before; got != 2 {
			t.Errorf("widgets created: %d, want 2", got)
		}
	})

	t.Run("409 while in flight", func(t *testing.T) {
		running := runningSeries("reports.generate")
		base := c.metric(t, running)
		first := make(chan error, 1)
		go func() {
			_, err := c.send("reports.generate", `{"ms":10000}`, "Idempotency-Key", "slow-1")
			first <- err
		}()
		c.waitMetric(t, running, base+1)
		dup := c.post(t, "reports.generate", `{"ms":10000}`, "Idempotency-Key", "slow-1")
		dup.wantError(t, 409, dispatcher.CodeKeyInFlight)
		if n, err := strconv.Atoi(dup.header.Get("Retry-After")); err != nil || n < 1 {
			t.Errorf("409 Retry-After = %q, want a number of seconds", dup.header.Get("Retry-After"))
		}
		// Another caller's same key is not in flight.
		var rep struct {
			ReportID string `json:"report_id"`
		}
		c.post(t, "reports.generate", `{"ms":0}`, "Idempotency-Key", "slow-1",
			"Authorization", "Bearer other").data(t, 200, &rep)
		if rep.ReportID == "" {
			t.Errorf("reports.generate: empty report_id")
		}
		// The slow run is left to the server's shutdown.
	})

	t.Run("storm of 60 identical creates makes one widget", func(t *testing.T) {
		before := c.widgetCount(t)
		const n = 60
		replies := make([]reply, n)
		errs := make([]error, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-start
				replies[i], errs[i] = c.send("widgets.create", `{"name":"storm"}`, "Idempotency-Key", "storm-1")
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
			case r.status == 409 || r.status == 201:
			default:
				t.Errorf("request %d: got %d %s, want 201 or 409", i, r.status, r.body)
			}
		}
		if got := c.widgetCount(t) - before; got != 1 {
			t.Errorf("widgets created by the storm: %d, want exactly 1", got)
		}
	})

	t.Run("health", func(t *testing.T) {
		r, err := c.http.Get(c.base + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != 200 {
			t.Errorf("GET /healthz: %d, want 200", r.StatusCode)
		}
	})

	t.Run("metrics count outcomes", func(t *testing.T) {
		series := `idemd_commands_total{command="widgets.create",outcome="replayed"}`
		before := c.metric(t, series)
		c.post(t, "widgets.create", `{"name":"m"}`, "Idempotency-Key", "metrics-1")
		c.post(t, "widgets.create", `{"name":"m"}`, "Idempotency-Key", "metrics-1")
		if got := c.metric(t, series); got != before+1 {
			t.Errorf("%s: got %v, want %v", series, got, before+1)
		}
		if got := c.metric(t, `idemd_commands_total{command="other",outcome="unknown_command"}`); got < 1 {
			t.Errorf("unknown commands counted under other: got %v, want >= 1", got)
		}
		if got := c.metric(t, `idemd_store_call_duration_seconds_count{op="begin",result="ok"}`); got < 1 {
			t.Errorf("store begin calls timed: got %v, want >= 1", got)
		}
	})
}
