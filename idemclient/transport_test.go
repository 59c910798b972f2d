package idemclient

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestNewKey(t *testing.T) {
	a, b := NewKey(), NewKey()
	if !uuidRE.MatchString(a) || !uuidRE.MatchString(b) {
		t.Fatalf("NewKey() = %q, %q, want version 4 UUIDs", a, b)
	}
	if a == b {
		t.Fatalf("NewKey() twice = %q both times", a)
	}
}

func TestKeyAddedAndKeptAcrossRetries(t *testing.T) {
	s := &scripted{t: t, answers: []answer{{status: 503}, {err: syscall.ECONNRESET}, {status: 201}}}
	w := &waits{}
	tr := New(WithBase(s), WithClock(nil, w.sleep), WithJitter(maxJitter))
	req := post(t, context.Background(), `{"name":"a"}`)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("status %d, want 201", resp.StatusCode)
	}
	seen := s.attempts()
	if len(seen) != 3 {
		t.Fatalf("%d attempts, want 3", len(seen))
	}
	key := seen[0].key
	if !uuidRE.MatchString(key) {
		t.Fatalf("key %q, want a UUID", key)
	}
	for i, a := range seen {
		if a.key != key {
			t.Errorf("attempt %d key %q, want %q", i+1, a.key, key)
		}
		if a.body != `{"name":"a"}` {
			t.Errorf("attempt %d body %q, want the request's body (rewound with GetBody)", i+1, a.body)
		}
	}
	if got := Attempts(resp); got != 3 {
		t.Errorf("Attempts = %d, want 3", got)
	}
	if got := Key(resp); got != key {
		t.Errorf("Key = %q, want %q", got, key)
	}
	if req.Header.Get(HeaderKey) != "" {
		t.Errorf("the caller's request was modified: it has key %q", req.Header.Get(HeaderKey))
	}
	if got, want := w.got(), []time.Duration{100 * time.Millisecond, 200 * time.Millisecond}; !slices.Equal(got, want) {
		t.Errorf("waits %v, want %v", got, want)
	}
}

func TestCallersKeyKept(t *testing.T) {
	s := &scripted{t: t, answers: []answer{{status: 429}, {status: 200}}}
	tr := New(WithBase(s), WithClock(nil, (&waits{}).sleep))
	req := post(t, context.Background(), `{}`)
	req.Header.Set(HeaderKey, "mine-1")
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	for i, a := range s.attempts() {
		if a.key != "mine-1" {
			t.Errorf("attempt %d key %q, want the caller's mine-1", i+1, a.key)
		}
	}
	if len(s.attempts()) != 2 {
		t.Errorf("%d attempts, want 2", len(s.attempts()))
	}
}

func TestMethodsNotCoveredPassThrough(t *testing.T) {
	for _, method := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
		t.Run(method, func(t *testing.T) {
			s := &scripted{t: t, answers: []answer{{status: 503}, {status: 200}}}
			tr := New(WithBase(s), WithClock(nil, (&waits{}).sleep))
			req, _ := http.NewRequest(method, "http://example.test/", nil)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 503 || len(s.attempts()) != 1 || s.attempts()[0].key != "" {
				t.Fatalf("got %d after %d attempts with key %q, want 503 after 1 without a key",
					resp.StatusCode, len(s.attempts()), s.attempts()[0].key)
			}
		})
	}
	t.Run("WithMethods", func(t *testing.T) {
		s := &scripted{t: t, answers: []answer{{status: 503}, {status: 200}}}
		tr := New(WithBase(s), WithClock(nil, (&waits{}).sleep), WithMethods("put"))
		req, _ := http.NewRequest(http.MethodPut, "http://example.test/", nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || len(s.attempts()) != 2 {
			t.Fatalf("got %d after %d attempts, want 200 after 2", resp.StatusCode, len(s.attempts()))
		}
	})
}

func TestWhichStatusesAreRetried(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		header http.Header
		retry  bool
	}{
		{"409 in flight", 409, hdr("Retry-After", "1"), true},
		{"409 other conflict", 409, nil, false},
		{"429", 429, nil, true},
		{"503", 503, nil, true},
		{"400", 400, hdr("Retry-After", "1"), false},
		{"410", 410, nil, false},
		{"413", 413, nil, false},
		{"422", 422, nil, false},
		{"500", 500, nil, false},
		{"502", 502, nil, false},
		{"504", 504, nil, false},
		{"201", 201, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &scripted{t: t, answers: []answer{{status: tc.status, header: tc.header}, {status: 299}}}
			tr := New(WithBase(s), WithClock(nil, (&waits{}).sleep))
			resp, err := tr.RoundTrip(post(t, context.Background(), `{}`))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			want, attempts := tc.status, 1
			if tc.retry {
				want, attempts = 299, 2
			}
			if resp.StatusCode != want || len(s.attempts()) != attempts {
				t.Fatalf("got %d after %d attempts, want %d after %d", resp.StatusCode, len(s.attempts()), want, attempts)
			}
		})
	}
}

func TestWhichErrorsAreRetried(t *testing.T) {
	for _, tc := range []struct {
		name  string
		err   error
		retry bool
	}{
		{"refused", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, true},
		{"reset", syscall.ECONNRESET, true},
		{"EOF", io.EOF, true},
		{"unexpected EOF", io.ErrUnexpectedEOF, true},
		{"timeout", errAttemptTimeout, true},
		{"dns temporary", &net.DNSError{Err: "server misbehaving", IsTemporary: true}, true},
		{"dns not found", &net.DNSError{Err: "no such host", IsNotFound: true}, false},
		{"other", errors.New("unsupported protocol scheme"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &scripted{t: t, answers: []answer{{err: tc.err}, {status: 201}}}
			tr := New(WithBase(s), WithClock(nil, (&waits{}).sleep))
			resp, err := tr.RoundTrip(post(t, context.Background(), `{}`))
			if tc.retry {
				if err != nil {
					t.Fatalf("err %v, want the retry's 201", err)
				}
				resp.Body.Close()
				return
			}
			var e *Error
			if !errors.As(err, &e) || !errors.Is(err, tc.err) || e.Attempts != 1 || e.Key != s.attempts()[0].key {
				t.Fatalf("err %v, want an *Error of 1 attempt with the key sent, wrapping %v", err, tc.err)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name, value string
		want        time.Duration
	}{
		{"seconds", "3", 3 * time.Second},
		{"zero", "0", 100 * time.Millisecond}, // the backoff is the floor
		{"seconds capped", "3600", 10 * time.Second},
		{"huge", "99999999999999999", 10 * time.Second},
		{"date", now.Add(7 * time.Second).Format(http.TimeFormat), 7 * time.Second},
		{"date capped", now.Add(time.Hour).Format(http.TimeFormat), 10 * time.Second},
		{"date past", now.Add(-time.Hour).Format(http.TimeFormat), 100 * time.Millisecond},
		{"malformed", "soon", 100 * time.Millisecond},
		{"negative", "-5", 100 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &scripted{t: t, answers: []answer{{status: 503, header: hdr("Retry-After", tc.value)}, {status: 201}}}
			w := &waits{}
			tr := New(WithBase(s), WithClock(func() time.Time { return now }, w.sleep),
				WithJitter(maxJitter), WithMaxRetryAfter(10*time.Second))
			resp, err := tr.RoundTrip(post(t, context.Background(), `{}`))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := w.got(); len(got) != 1 || got[0] != tc.want {
				t.Fatalf("waits %v, want [%v]", got, tc.want)
			}
		})
	}
}

func TestBackoff(t *testing.T) {
	for _, tc := range []struct {
		name   string
		jitter func(int64) int64
		want   []time.Duration
	}{
		{"upper", maxJitter, []time.Duration{100, 200, 400, 500, 500}},
		{"lower", func(int64) int64 { return 0 }, []time.Duration{50, 100, 200, 250, 250}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &scripted{t: t, answers: []answer{{status: 503}}}
			w := &waits{}
			tr := New(WithBase(s), WithClock(nil, w.sleep), WithJitter(tc.jitter),
				WithBackoff(100*time.Millisecond, 500*time.Millisecond), WithMaxAttempts(6))
			resp, err := tr.RoundTrip(post(t, context.Background(), `{}`))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadAll(resp.Body); err != nil {
				t.Fatalf("the last response's body: %v", err)
			}
			resp.Body.Close()
			want := make([]time.Duration, len(tc.want))
			for i, ms := range tc.want {
				want[i] = ms * time.Millisecond
			}
			if got := w.got(); !slices.Equal(got, want) {
				t.Errorf("waits %v, want %v", got, want)
			}
			if resp.StatusCode != 503 || Attempts(resp) != 6 {
				t.Errorf("got %d after %d attempts, want the last 503 after 6", resp.StatusCode, Attempts(resp))
			}
		})
	}
}

func TestBodyThatCannotBeRewoundIsSentOnce(t *testing.T) {
	for _, a := range []answer{{status: 503}, {err: syscall.ECONNRESET}} {
		s := &scripted{t: t, answers: []answer{a, {status: 201}}}
		tr := New(WithBase(s), WithClock(nil, (&waits{}).sleep))
		req, _ := http.NewRequest(http.MethodPost, "http://example.test/", io.MultiReader(strings.NewReader("x")))
		resp, err := tr.RoundTrip(req)
		if a.err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Attempts != 1 {
				t.Errorf("err %v, want an *Error of 1 attempt", err)
			}
		} else {
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 503 {
				t.Errorf("status %d, want the first answer, 503", resp.StatusCode)
			}
		}
		if n := len(s.attempts()); n != 1 || !uuidRE.MatchString(s.attempts()[0].key) {
			t.Errorf("%d attempts (key %q), want 1 with a key", n, s.attempts()[0].key)
		}
	}
}

func TestPreviousBodiesClosed(t *testing.T) {
	bodies := []*trackedBody{{Reader: strings.NewReader("busy")}, {Reader: strings.NewReader("busy")}, {Reader: strings.NewReader("ok")}}
	s := &scripted{t: t, answers: []answer{{status: 503, body: bodies[0]}, {status: 429, body: bodies[1]}, {status: 201, body: bodies[2]}}}
	tr := New(WithBase(s), WithClock(nil, (&waits{}).sleep))
	resp, err := tr.RoundTrip(post(t, context.Background(), `{}`))
	if err != nil {
		t.Fatal(err)
	}
	if !bodies[0].isClosed() || !bodies[1].isClosed() {
		t.Errorf("retried responses' bodies closed: %v %v, want both", bodies[0].isClosed(), bodies[1].isClosed())
	}
	if bodies[2].isClosed() {
		t.Error("the answer's body was closed by the transport")
	}
	resp.Body.Close()
}

func TestContextEndsRetries(t *testing.T) {
	t.Run("cancelled during a wait", func(t *testing.T) {
		s := &scripted{t: t, answers: []answer{{status: 503}}}
		ctx, cancel := context.WithCancel(context.Background())
		sleep := func(ctx context.Context, d time.Duration) error {
			cancel()
			return ctx.Err()
		}
		tr := New(WithBase(s), WithClock(nil, sleep))
		_, err := tr.RoundTrip(post(t, ctx, `{}`))
		var e *Error
		if !errors.As(err, &e) || !errors.Is(err, context.Canceled) || e.Attempts != 1 {
			t.Fatalf("err %v, want an *Error of 1 attempt wrapping context.Canceled", err)
		}
		if n := len(s.attempts()); n != 1 {
			t.Errorf("%d attempts, want 1", n)
		}
	})
	t.Run("done after an attempt", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		var base roundTripFunc = func(req *http.Request) (*http.Response, error) {
			cancel()
			return nil, &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
		}
		tr := New(WithBase(base), WithClock(nil, (&waits{}).sleep))
		_, err := tr.RoundTrip(post(t, ctx, `{}`))
		var e *Error
		if !errors.As(err, &e) || e.Attempts != 1 {
			t.Fatalf("err %v, want an *Error of 1 attempt", err)
		}
	})
	t.Run("wait beyond the deadline", func(t *testing.T) {
		now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
		s := &scripted{t: t, answers: []answer{{status: 503, header: hdr("Retry-After", "5")}, {status: 201}}}
		w := &waits{}
		ctx, cancel := context.WithDeadline(context.Background(), now.Add(2*time.Second))
		defer cancel()
		tr := New(WithBase(s), WithClock(func() time.Time { return now }, w.sleep))
		resp, err := tr.RoundTrip(post(t, ctx, `{}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 503 || len(w.got()) != 0 || len(s.attempts()) != 1 {
			t.Fatalf("got %d after %d attempts and waits %v, want the 503 at once", resp.StatusCode, len(s.attempts()), w.got())
		}
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// TestAttemptTimeout runs in a synctest bubble: the first attempt hangs
// until its attempt deadline, the second answers.
func TestAttemptTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		calls := 0
		var base roundTripFunc = func(req *http.Request) (*http.Response, error) {
			calls++
			if calls == 1 {
				<-req.Context().Done()
				return nil, req.Context().Err()
			}
			return &http.Response{StatusCode: 201, Header: make(http.Header), Body: io.NopCloser(strings.NewReader("ok")), Request: req}, nil
		}
		tr := New(WithBase(base), WithAttemptTimeout(time.Second))
		start := time.Now()
		resp, err := tr.RoundTrip(post(t, context.Background(), `{}`))
		if err != nil {
			t.Fatal(err)
		}
		// The answer's body outlives the attempt timeout.
		time.Sleep(5 * time.Second)
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(b) != "ok" {
			t.Fatalf("body %q, %v; want ok", b, err)
		}
		if elapsed := time.Since(start); calls != 2 || elapsed < time.Second || elapsed > 7*time.Second {
			t.Fatalf("%d calls in %v, want 2 after the 1s attempt timeout and a backoff", calls, elapsed)
		}
	})
}

func TestReplayed(t *testing.T) {
	s := &scripted{t: t, answers: []answer{{err: io.EOF}, {status: 201, header: hdr(HeaderReplayed, "true")}}}
	tr := New(WithBase(s), WithClock(nil, (&waits{}).sleep))
	resp, err := tr.RoundTrip(post(t, context.Background(), `{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !Replayed(resp) || Attempts(resp) != 2 {
		t.Fatalf("Replayed %v Attempts %d, want true 2", Replayed(resp), Attempts(resp))
	}
	if Replayed(nil) || Attempts(nil) != 0 || Key(nil) != "" {
		t.Fatal("the helpers of a nil response should say nothing")
	}
}

func TestEdgeCases(t *testing.T) {
	t.Run("no header map", func(t *testing.T) {
		s := &scripted{t: t, answers: []answer{{status: 201}}}
		u, _ := url.Parse("http://example.test/")
		resp, err := New(WithBase(s)).RoundTrip(&http.Request{Method: http.MethodPatch, URL: u})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if !uuidRE.MatchString(s.attempts()[0].key) {
			t.Fatalf("key %q, want a UUID", s.attempts()[0].key)
		}
	})
	t.Run("GetBody fails", func(t *testing.T) {
		s := &scripted{t: t, answers: []answer{{status: 503}, {status: 201}}}
		req := post(t, context.Background(), `{}`)
		boom := errors.New("cannot reopen")
		req.GetBody = func() (io.ReadCloser, error) { return nil, boom }
		_, err := New(WithBase(s), WithClock(nil, (&waits{}).sleep)).RoundTrip(req)
		var e *Error
		if !errors.As(err, &e) || !errors.Is(err, boom) || e.Attempts != 1 {
			t.Fatalf("err %v, want an *Error of 1 attempt wrapping the GetBody error", err)
		}
	})
	t.Run("at least one attempt", func(t *testing.T) {
		s := &scripted{t: t, answers: []answer{{status: 503}, {status: 201}}}
		resp, err := New(WithBase(s), WithMaxAttempts(0)).RoundTrip(post(t, context.Background(), `{}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 503 || len(s.attempts()) != 1 {
			t.Fatalf("got %d after %d attempts, want 503 after 1", resp.StatusCode, len(s.attempts()))
		}
	})
	t.Run("backoff near forever", func(t *testing.T) {
		tr := New(WithBackoff(time.Second, time.Duration(1<<62)), WithJitter(maxJitter))
		if d := tr.backoff(200); d != time.Duration(1<<62) {
			t.Fatalf("backoff(200) = %v, want the maximum", d)
		}
	})
}
