package dispatcher_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/dispatcher"
)

// envelope is the decoded wire envelope.
type envelope struct {
	OK    bool            `json:"ok"`
	Data  json.RawMessage `json:"data"`
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func decode(t *testing.T, body []byte) envelope {
	t.Helper()
	var e envelope
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("body %q is not an envelope: %v", body, err)
	}
	if e.OK != (e.Error == nil) {
		t.Fatalf("body %q: ok=%v but error=%v", body, e.OK, e.Error)
	}
	return e
}

// wantError checks that (status, body) is the error envelope with code.
func wantError(t *testing.T, status int, body []byte, wantStatus int, wantCode string) envelope {
	t.Helper()
	e := decode(t, body)
	if status != wantStatus || e.Error == nil || e.Error.Code != wantCode {
		t.Fatalf("got %d %s, want %d with code %q", status, body, wantStatus, wantCode)
	}
	if e.Error.Message == "" {
		t.Errorf("body %s: empty error message", body)
	}
	return e
}

// counter is a handler that counts its runs and answers 201 with the count.
type counter struct{ runs atomic.Int64 }

func (c *counter) handle(_ context.Context, req dispatcher.Request) (dispatcher.Response, error) {
	n := c.runs.Add(1)
	return dispatcher.Response{Status: http.StatusCreated, Data: map[string]any{"run": n, "payload": req.Payload}}, nil
}

func cmd(name, key, identity, payload string) dispatcher.Command {
	return dispatcher.Command{Name: name, Key: key, Identity: identity, Payload: json.RawMessage(payload)}
}

func TestDispatchRefusals(t *testing.T) {
	var c counter
	d := dispatcher.New(idempotency.NewEngine(idempotency.NewInMemoryStore()))
	d.Register("create", c.handle)
	tests := []struct {
		name       string
		cmd        dispatcher.Command
		wantStatus int
		wantCode   string
	}{
		{"unknown command", cmd("nope", "k", "", `{}`), 404, dispatcher.CodeUnknownCommand},
		{"missing key", cmd("create", "", "", `{}`), 400, dispatcher.CodeKeyMissing},
		{"300-byte key", cmd("create", strings.Repeat("k", 300), "", `{}`), 400, dispatcher.CodeKeyInvalid},
		{"control character in key", cmd("create", "a\nb", "", `{}`), 400, dispatcher.CodeKeyInvalid},
		{"invalid UTF-8 in key", cmd("create", "a\xffb", "", `{}`), 400, dispatcher.CodeKeyInvalid},
		{"invalid JSON", cmd("create", "k", "", `{"name":`), 400, dispatcher.CodeInvalidJSON},
		{"two JSON values", cmd("create", "k", "", `{} {}`), 400, dispatcher.CodeInvalidJSON},
		{"duplicate member", cmd("create", "k", "", `{"a":1,"a":2}`), 400, dispatcher.CodeInvalidJSON},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := d.Dispatch(context.Background(), tt.cmd)
			wantError(t, status, body, tt.wantStatus, tt.wantCode)
		})
	}
	if got := c.runs.Load(); got != 0 {
		t.Errorf("handler ran %d times, want 0", got)
	}
	// None of the refusals claimed the key: it still runs.
	status, _ := d.Dispatch(context.Background(), cmd("create", "k", "", `{}`))
	if status != http.StatusCreated {
		t.Errorf("after refusals: got status %d, want 201", status)
	}
}

func TestDispatchReplaysVerbatim(t *testing.T) {
	var c counter
	d := dispatcher.New(idempotency.NewEngine(idempotency.NewInMemoryStore()))
	d.Register("create", c.handle)
	ctx := context.Background()
	status1, first := d.Dispatch(ctx, cmd("create", "k1", "alice", `{"name":"a","n":1}`))
	if status1 != http.StatusCreated {
		t.Fatalf("first: got %d %s, want 201", status1, first)
	}
	body1 := string(first)
	first[0] = 'x' // the caller owns the slice: the record must not change
	// A retry with other white space, member order or number spelling is the
	// same payload.
	for _, p := range []string{`{"name":"a","n":1}`, "{ \"name\" : \"a\",\n \"n\": 1 }", `{"n":1.0,"name":"\u0061"}`} {
		status, body := d.Dispatch(ctx, cmd("create", "k1", "alice", p))
		if status != status1 || string(body) != body1 {
			t.Errorf("retry with %q: got %d %s, want %d %s", p, status, body, status1, body1)
		}
	}
	if got := c.runs.Load(); got != 1 {
		t.Errorf("handler ran %d times, want 1", got)
	}
	// The caller owns the returned slice: scribbling on it changes no replay.
	_, body := d.Dispatch(ctx, cmd("create", "k1", "alice", `{"name":"a","n":1}`))
	for i := range body {
		body[i] = 'x'
	}
	_, again := d.Dispatch(ctx, cmd("create", "k1", "alice", `{"name":"a","n":1}`))
	if string(again) != body1 {
		t.Errorf("replay after the caller changed a returned body: got %s, want %s", again, body1)
	}
}

func TestDispatchKeyScope(t *testing.T) {
	var c counter
	d := dispatcher.New(idempotency.NewEngine(idempotency.NewInMemoryStore()))
	d.Register("create", c.handle)
	d.Register("other", c.handle)
	ctx := context.Background()
	if status, body := d.Dispatch(ctx, cmd("create", "k", "alice", `{"name":"a"}`)); status != 201 {
		t.Fatalf("first: got %d %s", status, body)
	}
	tests := []struct {
		name       string
		cmd        dispatcher.Command
		wantStatus int
		wantRuns   int64
	}{
		{"same key, other payload", cmd("create", "k", "alice", `{"name":"b"}`), 422, 1},
		{"same key, other command", cmd("other", "k", "alice", `{"name":"a"}`), 422, 1},
		{"same key, other identity", cmd("create", "k", "bob", `{"name":"a"}`), 201, 2},
		{"same key, anonymous", cmd("create", "k", "", `{"name":"a"}`), 201, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := d.Dispatch(ctx, tt.cmd)
			if tt.wantStatus == 422 {
				wantError(t, status, body, 422, dispatcher.CodeKeyReused)
			} else if status != tt.wantStatus {
				t.Errorf("got %d %s, want %d", status, body, tt.wantStatus)
			}
			if got := c.runs.Load(); got != tt.wantRuns {
				t.Errorf("handler runs: got %d, want %d", got, tt.wantRuns)
			}
		})
	}
}

func TestDispatchRecordPolicy(t *testing.T) {
	secret := errors.New("db password is hunter2")
	tests := []struct {
		name       string
		handler    dispatcher.Handler
		wantStatus int
		wantCode   string // "" for a success envelope
		recorded   bool
	}{
		{"success", func(context.Context, dispatcher.Request) (dispatcher.Response, error) {
			return dispatcher.Response{Data: "fine"}, nil
		}, 200, "", true},
		{"own 4xx error", func(context.Context, dispatcher.Request) (dispatcher.Response, error) {
			return dispatcher.Response{}, dispatcher.Errorf(409, "name_taken", "the name %q is taken", "x")
		}, 409, "name_taken", true},
		{"wrapped 4xx error", func(context.Context, dispatcher.Request) (dispatcher.Response, error) {
			return dispatcher.Response{}, fmt.Errorf("validating: %w", dispatcher.Errorf(400, "bad_name", "bad"))
		}, 400, "bad_name", true},
		{"own 5xx error", func(context.Context, dispatcher.Request) (dispatcher.Response, error) {
			return dispatcher.Response{}, dispatcher.Errorf(502, "upstream_failed", "the upstream failed")
		}, 502, "upstream_failed", false},
		{"internal error", func(context.Context, dispatcher.Request) (dispatcher.Response, error) {
			return dispatcher.Response{}, secret
		}, 500, dispatcher.CodeInternal, false},
		{"error wrapping an engine sentinel", func(context.Context, dispatcher.Request) (dispatcher.Response, error) {
			return dispatcher.Response{}, fmt.Errorf("nested: %w", idempotency.ErrMismatch)
		}, 500, dispatcher.CodeInternal, false},
		{"panic", func(context.Context, dispatcher.Request) (dispatcher.Response, error) {
			panic(secret)
		}, 500, dispatcher.CodeInternal, false},
		{"invalid *Error", func(context.Context, dispatcher.Request) (dispatcher.Response, error) {
			return dispatcher.Response{}, &dispatcher.Error{Status: 200, Code: "ok?"}
		}, 500, dispatcher.CodeInternal, false},
		{"error status without an error", func(context.Context, dispatcher.Request) (dispatcher.Response, error) {
			return dispatcher.Response{Status: 400, Data: "?"}, nil
		}, 500, dispatcher.CodeInternal, false},
		{"204 has no body", func(context.Context, dispatcher.Request) (dispatcher.Response, error) {
			return dispatcher.Response{Status: 204}, nil
		}, 500, dispatcher.CodeInternal, false},
		{"data that does not marshal", func(context.Context, dispatcher.Request) (dispatcher.Response, error) {
			return dispatcher.Response{Data: make(chan int)}, nil
		}, 500, dispatcher.CodeInternal, false},
		{"payload of the wrong shape", func(_ context.Context, req dispatcher.Request) (dispatcher.Response, error) {
			var p struct{ N int }
			return dispatcher.Response{Data: p}, req.Decode(&p)
		}, 400, dispatcher.CodeInvalidPayload, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var runs atomic.Int64
			d := dispatcher.New(idempotency.NewEngine(idempotency.NewInMemoryStore()))
			d.Register("c", func(ctx context.Context, req dispatcher.Request) (dispatcher.Response, error) {
				runs.Add(1)
				return tt.handler(ctx, req)
			})
			c := cmd("c", "k", "", `{"extra":true}`)
			status, body := d.Dispatch(context.Background(), c)
			if tt.wantCode == "" {
				if e := decode(t, body); status != tt.wantStatus || !e.OK {
					t.Fatalf("got %d %s, want %d ok", status, body, tt.wantStatus)
				}
			} else {
				wantError(t, status, body, tt.wantStatus, tt.wantCode)
			}
			if strings.Contains(string(body), "hunter2") || strings.Contains(string(body), "nested") {
				t.Errorf("body %s leaks an internal error", body)
			}
			status2, body2 := d.Dispatch(context.Background(), c)
			wantRuns := int64(2)
			if tt.recorded {
				wantRuns = 1
				if status2 != status || string(body2) != string(body) {
					t.Errorf("retry: got %d %s, want the recorded %d %s", status2, body2, status, body)
				}
			}
			if got := runs.Load(); got != wantRuns {
				t.Errorf("handler ran %d times, want %d (recorded=%v)", got, wantRuns, tt.recorded)
			}
		})
	}
}

func TestDispatchNoKey(t *testing.T) {
	var c counter
	d := dispatcher.New(idempotency.NewEngine(idempotency.NewInMemoryStore()))
	d.Register("list", c.handle, dispatcher.NoKey())
	ctx := context.Background()
	for i, key := range []string{"", "k", "k", strings.Repeat("k", 300)} {
		status, body := d.Dispatch(ctx, cmd("list", key, "", ""))
		if status != 201 {
			t.Fatalf("dispatch %d (key %.10q): got %d %s, want 201", i, key, status, body)
		}
	}
	if got := c.runs.Load(); got != 4 {
		t.Errorf("handler ran %d times, want 4 (never deduplicated)", got)
	}
}

func TestDispatchEmptyPayloadIsEmptyObject(t *testing.T) {
	var got []string
	d := dispatcher.New(idempotency.NewEngine(idempotency.NewInMemoryStore()))
	d.Register("c", func(_ context.Context, req dispatcher.Request) (dispatcher.Response, error) {
		got = append(got, string(req.Payload))
		return dispatcher.Response{}, nil
	})
	d.Dispatch(context.Background(), cmd("c", "k", "", " "))
	status, body := d.Dispatch(context.Background(), cmd("c", "k", "", "{}"))
	if status != 200 {
		t.Errorf("{} after an empty payload: got %d %s, want the 200 replay", status, body)
	}
	if len(got) != 1 || got[0] != "{}" {
		t.Errorf("handler saw payloads %q, want one {}", got)
	}
}

func TestDispatchTombstone(t *testing.T) {
	var c counter
	engine := idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithMaxResponseBytes(16))
	d := dispatcher.New(engine)
	d.Register("big", c.handle)
	status, body := d.Dispatch(context.Background(), cmd("big", "k", "", `{"x":"a long enough payload"}`))
	if status != 201 || !decode(t, body).OK {
		t.Fatalf("first: got %d %s, want the full 201 answer", status, body)
	}
	status, body = d.Dispatch(context.Background(), cmd("big", "k", "", `{"x":"a long enough payload"}`))
	wantError(t, status, body, http.StatusGone, dispatcher.CodeResponseNotRecorded)
	if got := c.runs.Load(); got != 1 {
		t.Errorf("handler ran %d times, want 1", got)
	}
}

// brokenStore fails every call as an unreachable backend would.
type brokenStore struct{}

var errDown = fmt.Errorf("dial tcp 10.0.0.1:6379: connection refused: %w", idempotency.ErrStoreUnavailable)

func (*brokenStore) Lookup(context.Context, string, string) (*idempotency.Cached, bool) {
	return nil, false
}
func (*brokenStore) Store(context.Context, string, string, idempotency.Cached) error { return errDown }
func (*brokenStore) Begin(context.Context, string, string, idempotency.ClaimRequest) (idempotency.Claim, error) {
	return idempotency.Claim{}, errDown
}
func (*brokenStore) Complete(context.Context, idempotency.Token, idempotency.Cached) error {
	return errDown
}
func (*brokenStore) Release(context.Context, idempotency.Token) error { return errDown }
func (*brokenStore) Renew(context.Context, idempotency.Token, time.Duration) error {
	return errDown
}

func TestDispatchStoreUnavailable(t *testing.T) {
	var c counter
	var events []dispatcher.Event
	d := dispatcher.New(idempotency.NewEngine(&brokenStore{}), dispatcher.WithObserver(func(_ context.Context, e dispatcher.Event) { events = append(events, e) }))
	d.Register("c", c.handle)
	status, body := d.Dispatch(context.Background(), cmd("c", "k", "", `{}`))
	wantError(t, status, body, 503, dispatcher.CodeStoreUnavailable)
	if strings.Contains(string(body), "10.0.0.1") {
		t.Errorf("body %s leaks the store's error", body)
	}
	if got := c.runs.Load(); got != 0 {
		t.Errorf("handler ran %d times with the store down, want 0", got)
	}
	if len(events) != 1 || events[0].Outcome != dispatcher.OutcomeStoreUnavailable || !errors.Is(events[0].Err, errDown) {
		t.Errorf("events: got %+v, want one store_unavailable carrying the store error", events)
	}
}

func TestDispatchCancelledReleasesKey(t *testing.T) {
	var runs atomic.Int64
	started := make(chan struct{})
	d := dispatcher.New(idempotency.NewEngine(idempotency.NewInMemoryStore()))
	d.Register("slow", func(ctx context.Context, _ dispatcher.Request) (dispatcher.Response, error) {
		if runs.Add(1) == 1 {
			close(started)
			<-ctx.Done()
			return dispatcher.Response{}, ctx.Err()
		}
		return dispatcher.Response{Data: "done"}, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	type result struct {
		status int
		body   []byte
	}
	done := make(chan result)
	go func() {
		s, b := d.Dispatch(ctx, cmd("slow", "k", "", `{}`))
		done <- result{s, b}
	}()
	<-started
	cancel()
	r := <-done
	wantError(t, r.status, r.body, 503, dispatcher.CodeCancelled)
	status, body := d.Dispatch(context.Background(), cmd("slow", "k", "", `{}`))
	if status != 200 {
		t.Errorf("retry after a cancelled run: got %d %s, want 200 (key released)", status, body)
	}
}

func TestDispatchInFlight(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	d := dispatcher.New(idempotency.NewEngine(idempotency.NewInMemoryStore()))
	d.Register("slow", func(context.Context, dispatcher.Request) (dispatcher.Response, error) {
		close(started)
		<-release
		return dispatcher.Response{Data: "done"}, nil
	})
	done := make(chan int)
	go func() {
		s, _ := d.Dispatch(context.Background(), cmd("slow", "k", "", `{}`))
		done <- s
	}()
	<-started
	status, body := d.Dispatch(context.Background(), cmd("slow", "k", "", `{}`))
	wantError(t, status, body, 409, dispatcher.CodeKeyInFlight)
	status, body = d.Dispatch(context.Background(), cmd("slow", "k", "", `{"other":1}`))
	wantError(t, status, body, 422, dispatcher.CodeKeyReused)
	close(release)
	if s := <-done; s != 200 {
		t.Errorf("first: got %d, want 200", s)
	}
}

func TestDispatchConcurrentDuplicatesRunOnce(t *testing.T) {
	var c counter
	d := dispatcher.New(idempotency.NewEngine(idempotency.NewInMemoryStore()))
	d.Register("create", c.handle)
	const n = 50
	bodies := make([]string, n)
	statuses := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			s, b := d.Dispatch(context.Background(), cmd("create", "storm", "", `{"name":"w"}`))
			statuses[i], bodies[i] = s, string(b)
		})
	}
	wg.Wait()
	if got := c.runs.Load(); got != 1 {
		t.Fatalf("handler ran %d times, want 1", got)
	}
	var first string
	for i := range n {
		switch statuses[i] {
		case 201:
			if first == "" {
				first = bodies[i]
			} else if bodies[i] != first {
				t.Errorf("201 bodies differ: %s vs %s", bodies[i], first)
			}
		case 409:
		default:
			t.Errorf("dispatch %d: got %d %s, want 201 or 409", i, statuses[i], bodies[i])
		}
	}
}

func TestDispatchFence(t *testing.T) {
	var fences []uint64
	d := dispatcher.New(idempotency.NewEngine(idempotency.NewInMemoryStore()))
	d.Register("c", func(_ context.Context, req dispatcher.Request) (dispatcher.Response, error) {
		fences = append(fences, req.Fence)
		if req.Key == "" {
			return dispatcher.Response{}, errors.New("no key in the request")
		}
		return dispatcher.Response{}, nil
	})
	d.Register("read", func(_ context.Context, req dispatcher.Request) (dispatcher.Response, error) {
		fences = append(fences, req.Fence)
		return dispatcher.Response{}, nil
	}, dispatcher.NoKey())
	d.Dispatch(context.Background(), cmd("c", "k1", "", `{}`))
	d.Dispatch(context.Background(), cmd("c", "k2", "", `{}`))
	d.Dispatch(context.Background(), cmd("read", "", "", `{}`))
	if len(fences) != 3 || fences[0] == 0 || fences[1] <= fences[0] || fences[2] != 0 {
		t.Errorf("fences: got %v, want two increasing non-zero fences, then 0 without a key", fences)
	}
}

func TestObserverOutcomes(t *testing.T) {
	var got []dispatcher.Outcome
	d := dispatcher.New(idempotency.NewEngine(idempotency.NewInMemoryStore()), dispatcher.WithObserver(func(_ context.Context, e dispatcher.Event) {
		got = append(got, e.Outcome)
	}))
	var c counter
	d.Register("c", c.handle)
	d.Register("fail", func(context.Context, dispatcher.Request) (dispatcher.Response, error) {
		return dispatcher.Response{}, errors.New("boom")
	})
	ctx := context.Background()
	d.Dispatch(ctx, cmd("c", "k", "", `{}`))
	d.Dispatch(ctx, cmd("c", "k", "", `{}`))
	d.Dispatch(ctx, cmd("c", "k", "", `{"x":1}`))
	d.Dispatch(ctx, cmd("c", "", "", `{}`))
	d.Dispatch(ctx, cmd("c", "\x00", "", `{}`))
	d.Dispatch(ctx, cmd("zz", "k", "", `{}`))
	d.Dispatch(ctx, cmd("c", "k2", "", `{`))
	d.Dispatch(ctx, cmd("fail", "k3", "", `{}`))
	want := []dispatcher.Outcome{
		dispatcher.OutcomeExecuted, dispatcher.OutcomeReplayed, dispatcher.OutcomeKeyReused,
		dispatcher.OutcomeKeyMissing, dispatcher.OutcomeKeyInvalid, dispatcher.OutcomeUnknownCommand,
		dispatcher.OutcomeInvalidJSON, dispatcher.OutcomeError,
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("outcomes:\n got %v\nwant %v", got, want)
	}
	for _, o := range want {
		found := false
		for _, a := range dispatcher.Outcomes() {
			found = found || a == o
		}
		if !found {
			t.Errorf("Outcomes() lacks %q", o)
		}
	}
}

func TestRegisterPanics(t *testing.T) {
	h := func(context.Context, dispatcher.Request) (dispatcher.Response, error) {
		return dispatcher.Response{}, nil
	}
	tests := []struct {
		name string
		f    func(d *dispatcher.Dispatcher)
	}{
		{"empty name", func(d *dispatcher.Dispatcher) { d.Register("", h) }},
		{"nil handler", func(d *dispatcher.Dispatcher) { d.Register("x", nil) }},
		{"twice", func(d *dispatcher.Dispatcher) { d.Register("x", h); d.Register("x", h) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("Register did not panic")
				}
			}()
			tt.f(dispatcher.New(idempotency.NewEngine(idempotency.NewInMemoryStore())))
		})
	}
}
