package idemhttp_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/idemhttp"
)

// TestReplayByteForByte sends a command and its retry over real HTTP and
// compares the raw responses: the replay is the first response minus the
// headers never recorded (Set-Cookie, and the unlisted X-Trace) plus
// Idempotent-Replayed, with Date being the server's own.
func TestReplayByteForByte(t *testing.T) {
	store := idempotency.NewInMemoryStore()
	runs := 0
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs++
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("Location", "/widgets/w1")
		w.Header().Set("X-Widget-Version", "3")
		w.Header().Set("X-Trace", "first-only")
		http.SetCookie(w, &http.Cookie{Name: "session", Value: "s3cr3t"})
		w.WriteHeader(http.StatusCreated)
		fmt.Fprint(w, `{"id":"w1","name":"gear"}`)
	})
	srv := httptest.NewServer(idemhttp.New(idempotency.NewEngine(store, idempotency.WithDetachedRun(true)), idemhttp.WithHeaders("X-Widget-Version", "Set-Cookie"), idemhttp.WithAnonymous(true))(h))
	defer srv.Close()

	post := func() (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest("POST", srv.URL+"/widgets", strings.NewReader(`{"name":"gear"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", `"create-gear-1"`)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		dump, err := httputil.DumpResponse(resp, true)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp, dump
	}
	first, firstDump := post()
	second, secondDump := post()

	if runs != 1 {
		t.Errorf("handler ran %d times, want 1", runs)
	}
	if first.Header.Get("Set-Cookie") == "" || first.Header.Get("X-Trace") == "" {
		t.Errorf("first response lacks its own headers: %v", first.Header)
	}
	if got := second.Header.Values("Set-Cookie"); len(got) != 0 {
		t.Errorf("replay carries Set-Cookie %q", got)
	}
	if got := second.Header.Get("Idempotent-Replayed"); got != "true" {
		t.Errorf("replay Idempotent-Replayed = %q, want true", got)
	}
	normalize := func(dump []byte, drop ...string) string {
		var keep []string
		for _, line := range strings.Split(string(dump), "\r\n") {
			name, _, _ := strings.Cut(line, ":")
			if !strings.EqualFold(name, "Date") && !containsFold(drop, name) {
				keep = append(keep, line)
			}
		}
		return strings.Join(keep, "\r\n")
	}
	want := normalize(firstDump, "Set-Cookie", "X-Trace")
	got := normalize(secondDump, "Idempotent-Replayed")
	if got != want {
		t.Errorf("replay differs from the first response:\n--- first (without unrecorded headers)\n%s\n--- replay (without Idempotent-Replayed)\n%s", want, got)
	}
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}

func TestSetCookieNeverRecorded(t *testing.T) {
	store := idempotency.NewInMemoryStore()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Set-Cookie", "a=1")
		w.Header().Set("Connection", "close")
		w.Header().Set("Authorization", "Bearer leaked")
		w.Header().Set("X-Kept", "yes")
		w.Write([]byte("ok"))
	})
	mw := idemhttp.New(idempotency.NewEngine(store, idempotency.WithDetachedRun(true)), idemhttp.WithHeaders("set-cookie", "Connection", "authorization", "x-kept", "Transfer-Encoding"), idemhttp.WithAnonymous(true))(h)

	first := send(mw, "POST", "/", "", "Idempotency-Key", "k")
	if first.Header().Get("Set-Cookie") != "a=1" {
		t.Errorf("first response Set-Cookie = %q, want a=1", first.Header().Get("Set-Cookie"))
	}
	rec, ok := store.Lookup(context.Background(), "k", "")
	if !ok {
		t.Fatal("no record stored")
	}
	for name := range rec.Header {
		switch name {
		case "Set-Cookie", "Connection", "Authorization":
			t.Errorf("record holds header %s", name)
		}
	}
	if got := rec.Header["X-Kept"]; len(got) != 1 || got[0] != "yes" {
		t.Errorf("record X-Kept = %q, want [yes]", got)
	}
	replay := send(mw, "POST", "/", "", "Idempotency-Key", "k")
	wantReplayed(t, replay, true)
	for _, name := range []string{"Set-Cookie", "Connection", "Authorization"} {
		if v := replay.Header().Values(name); len(v) != 0 {
			t.Errorf("replay %s = %q, want none", name, v)
		}
	}
}

func TestReplayKeepsStatusHeadersAndBody(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		status  int // 0: the first response's
	}{
		{"sniffed content type", func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, "<html><body>made</body></html>")
		}, 0},
		{"no content", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusNoContent)
		}, 0},
		{"empty 200", func(w http.ResponseWriter, r *http.Request) {}, 0},
		{"suppressed content type", func(w http.ResponseWriter, r *http.Request) {
			w.Header()["Content-Type"] = nil
			fmt.Fprint(w, "<html>")
		}, 0},
		{"early hints then created", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Set("Location", "/x")
			w.WriteHeader(http.StatusCreated)
			w.Write([]byte("made"))
		}, http.StatusCreated}, // the 103 went out at once and is not recorded
		{"client error", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "name is required", http.StatusBadRequest)
		}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runs := 0
			mw := idemhttp.New(idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true)), idemhttp.WithAnonymous(true))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				runs++
				tt.handler(w, r)
			}))
			first := send(mw, "POST", "/", "", "Idempotency-Key", "k")
			second := send(mw, "POST", "/", "", "Idempotency-Key", "k")
			if runs != 1 {
				t.Errorf("handler ran %d times, want 1", runs)
			}
			wantReplayed(t, first, false)
			wantReplayed(t, second, true)
			want := first.Code
			if tt.status != 0 {
				want = tt.status
			}
			if second.Code != want {
				t.Errorf("replay status = %d, want %d", second.Code, want)
			}
			if !bytes.Equal(first.Body.Bytes(), second.Body.Bytes()) {
				t.Errorf("replay body = %q, want %q", second.Body, first.Body)
			}
			for _, name := range []string{"Content-Type", "Location", "Content-Length"} {
				if f, s := first.Header().Values(name), second.Header().Values(name); strings.Join(f, "\n") != strings.Join(s, "\n") {
					t.Errorf("replay %s = %q, want %q", name, s, f)
				}
			}
		})
	}
}

func TestFingerprintMismatch(t *testing.T) {
	const firstBody = `{"name":"gear","size":{"w":2,"h":3},"tags":["a","b"]}`
	tests := []struct {
		name        string
		method      string
		target      string
		contentType string
		body        string
		wantStatus  int
	}{
		{"same request", "POST", "/widgets", "application/json", firstBody, http.StatusCreated},
		{"reordered keys and white space", "POST", "/widgets", "application/json",
			"{\n  \"tags\": [ \"a\", \"b\" ],\n  \"size\": {\"h\": 3, \"w\": 2.0},\n  \"name\": \"gear\"\n}", http.StatusCreated},
		{"json subtype", "POST", "/widgets", "application/vnd.api+json; charset=utf-8", `{"size":{"h":3,"w":2},"tags":["a","b"],"name":"gear"}`, http.StatusCreated},
		{"other payload", "POST", "/widgets", "application/json", `{"name":"cog","size":{"w":2,"h":3},"tags":["a","b"]}`, http.StatusUnprocessableEntity},
		{"array order matters", "POST", "/widgets", "application/json", `{"name":"gear","size":{"w":2,"h":3},"tags":["b","a"]}`, http.StatusUnprocessableEntity},
		{"other path", "POST", "/gadgets", "application/json", firstBody, http.StatusUnprocessableEntity},
		{"other query", "POST", "/widgets?dry_run=1", "application/json", firstBody, http.StatusUnprocessableEntity},
		{"other method", "PATCH", "/widgets", "application/json", firstBody, http.StatusUnprocessableEntity},
		{"not JSON: bytes compared", "POST", "/widgets", "text/plain", "{ \"name\":\"gear\",\"size\":{\"w\":2,\"h\":3},\"tags\":[\"a\",\"b\"]}", http.StatusUnprocessableEntity},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := &command{}
			mw := idemhttp.New(idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true)), idemhttp.WithAnonymous(true))(cmd)
			first := send(mw, "POST", "/widgets", firstBody, "Idempotency-Key", "k", "Content-Type", "application/json")
			if first.Code != http.StatusCreated {
				t.Fatalf("first status = %d", first.Code)
			}
			second := send(mw, tt.method, tt.target, tt.body, "Idempotency-Key", "k", "Content-Type", tt.contentType)
			wantRuns(t, cmd, 1)
			if tt.wantStatus == http.StatusUnprocessableEntity {
				wantProblem(t, second, tt.wantStatus)
				return
			}
			if second.Code != tt.wantStatus || second.Body.String() != `{"run":1}` {
				t.Errorf("retry = %d %s, want %d {\"run\":1}", second.Code, second.Body, tt.wantStatus)
			}
			wantReplayed(t, second, true)
		})
	}
}

func TestKeyErrors(t *testing.T) {
	long := strings.Repeat("k", 300)
	tests := []struct {
		name   string
		values []string // Idempotency-Key header lines
	}{
		{"missing (required)", nil},
		{"300 bytes", []string{long}},
		{"300 bytes quoted", []string{`"` + long + `"`}},
		{"control character", []string{"ab\x01cd"}},
		{"tab inside", []string{"ab\tcd"}},
		{"DEL", []string{"ab\x7fcd"}},
		{"two header lines", []string{"a", "b"}},
		{"two identical lines", []string{"a", "a"}},
		{"a list", []string{`"a", "b"`}},
		{"a bare list", []string{"a,b"}},
		{"empty", []string{""}},
		{"blank", []string{"   "}},
		{"empty quoted", []string{`""`}},
		{"unterminated quote", []string{`"abc`}},
		{"bad escape", []string{`"a\bc"`}},
		{"parameters", []string{`"abc";v=1`}},
		{"invalid UTF-8", []string{"ab\xffcd"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := &command{}
			store := idempotency.NewInMemoryStore()
			mw := idemhttp.New(idempotency.NewEngine(store, idempotency.WithDetachedRun(true)), idemhttp.WithRequired(true), idemhttp.WithAnonymous(true))(cmd)
			var header []string
			for _, v := range tt.values {
				header = append(header, "Idempotency-Key", v)
			}
			rr := send(mw, "POST", "/", `{}`, header...)
			p := wantProblem(t, rr, http.StatusBadRequest)
			wantRuns(t, cmd, 0)
			if store.Len() != 0 {
				t.Errorf("store holds %d records, want 0", store.Len())
			}
			wantType := "idempotency-key-invalid"
			if tt.values == nil {
				wantType = "idempotency-key-missing"
			}
			if !strings.HasSuffix(p.Type, wantType) {
				t.Errorf("problem type = %q, want …%s", p.Type, wantType)
			}
		})
	}
}

func TestKeyOptional(t *testing.T) {
	cmd := &command{}
	mw := idemhttp.New(idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true)), idemhttp.WithAnonymous(true))(cmd)
	for range 2 {
		rr := send(mw, "POST", "/", `{}`)
		if rr.Code != http.StatusCreated {
			t.Errorf("status = %d, want 201", rr.Code)
		}
		wantReplayed(t, rr, false)
	}
	wantRuns(t, cmd, 2)
	// A malformed key is refused even when the key is optional.
	wantProblem(t, send(mw, "POST", "/", `{}`, "Idempotency-Key", ""), http.StatusBadRequest)
	wantRuns(t, cmd, 2)
}

func TestQuotedAndBareKeysAreTheSame(t *testing.T) {
	cmd := &command{}
	mw := idemhttp.New(idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true)), idemhttp.WithAnonymous(true))(cmd)
	forms := []string{`"order-7"`, `order-7`, ` "order-7" `, "\torder-7"}
	for _, form := range forms {
		rr := send(mw, "POST", "/", `{}`, "Idempotency-Key", form)
		if rr.Code != http.StatusCreated || rr.Body.String() != `{"run":1}` {
			t.Errorf("key %q: %d %s, want 201 {\"run\":1}", form, rr.Code, rr.Body)
		}
	}
	wantRuns(t, cmd, 1)
	// Escapes are undone: "a\"b" is the key a"b; its bare form is refused.
	send(mw, "POST", "/", `{}`, "Idempotency-Key", `"a\"b\\c"`)
	rr := send(mw, "POST", "/", `{}`, "Idempotency-Key", `"a\"b\\c"`)
	wantReplayed(t, rr, true)
	wantRuns(t, cmd, 2)
}

func TestIdentityIsolation(t *testing.T) {
	cmd := &command{}
	store := idempotency.NewInMemoryStore()
	mw := idemhttp.New(idempotency.NewEngine(store, idempotency.WithDetachedRun(true)), idemhttp.WithAnonymous(true))(cmd)
	alice := send(mw, "POST", "/", `{}`, "Idempotency-Key", "k", "Authorization", "Bearer alice-token")
	bob := send(mw, "POST", "/", `{}`, "Idempotency-Key", "k", "Authorization", "Bearer bob-token")
	anon := send(mw, "POST", "/", `{}`, "Idempotency-Key", "k")
	aliceAgain := send(mw, "POST", "/", `{}`, "Idempotency-Key", "k", "Authorization", "Bearer alice-token")

	wantRuns(t, cmd, 3)
	for _, tc := range []struct {
		name string
		rr   *httptest.ResponseRecorder
		want string
	}{{"alice", alice, `{"run":1}`}, {"bob", bob, `{"run":2}`}, {"anonymous", anon, `{"run":3}`}, {"alice again", aliceAgain, `{"run":1}`}} {
		if got := tc.rr.Body.String(); got != tc.want {
			t.Errorf("%s got %s, want %s", tc.name, got, tc.want)
		}
	}
	wantReplayed(t, aliceAgain, true)
	if _, ok := store.Lookup(context.Background(), "k", "Bearer alice-token"); ok {
		t.Error("the raw Authorization value is used as the identity")
	}
}

func TestInFlightConflict(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	runs := 0
	mw := idemhttp.New(idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true)), idemhttp.WithAnonymous(true))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs++
		close(started)
		<-release
		w.WriteHeader(http.StatusCreated)
		fmt.Fprint(w, "done")
	}))
	firstDone := make(chan *httptest.ResponseRecorder)
	go func() { firstDone <- send(mw, "POST", "/", `{}`, "Idempotency-Key", "k") }()
	<-started

	dup := send(mw, "POST", "/", `{}`, "Idempotency-Key", "k")
	wantProblem(t, dup, http.StatusConflict)
	secs, err := strconv.Atoi(dup.Header().Get("Retry-After"))
	if err != nil || secs < 1 || secs > 30 {
		t.Errorf("Retry-After = %q, want whole seconds in [1, 30] (the remaining lease)", dup.Header().Get("Retry-After"))
	}

	close(release)
	if first := <-firstDone; first.Code != http.StatusCreated {
		t.Errorf("first status = %d, want 201", first.Code)
	}
	retry := send(mw, "POST", "/", `{}`, "Idempotency-Key", "k")
	wantReplayed(t, retry, true)
	if retry.Body.String() != "done" || runs != 1 {
		t.Errorf("retry = %q after %d runs, want the first's response after 1 run", retry.Body, runs)
	}
}

// TestStorm sends 60 identical requests at once over real HTTP: the handler
// runs exactly once; every other request gets its response replayed or 409.
func TestStorm(t *testing.T) {
	const n = 60
	cmd := &command{}
	srv := httptest.NewServer(idemhttp.New(idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true)), idemhttp.WithAnonymous(true))(cmd))
	defer srv.Close()
	client := srv.Client()
	client.Transport.(*http.Transport).MaxIdleConnsPerHost = n

	type result struct {
		status   int
		body     string
		replayed bool
		err      error
	}
	results := make([]result, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			req, _ := http.NewRequest("POST", srv.URL+"/widgets", strings.NewReader(`{"name":"w"}`))
			req.Header.Set("Idempotency-Key", "storm")
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				results[i].err = err
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			results[i] = result{resp.StatusCode, string(b), resp.Header.Get("Idempotent-Replayed") == "true", err}
		})
	}
	close(start)
	wg.Wait()

	wantRuns(t, cmd, 1)
	executed, replayed, conflicts := 0, 0, 0
	for i, r := range results {
		switch {
		case r.err != nil:
			t.Errorf("request %d: %v", i, r.err)
		case r.status == http.StatusCreated && r.body == `{"run":1}` && !r.replayed:
			executed++
		case r.status == http.StatusCreated && r.body == `{"run":1}`:
			replayed++
		case r.status == http.StatusConflict:
			conflicts++
		default:
			t.Errorf("request %d: %d %q", i, r.status, r.body)
		}
	}
	if executed != 1 || executed+replayed+conflicts != n {
		t.Errorf("executed %d, replayed %d, 409 %d; want 1 execution and %d in all", executed, replayed, conflicts, n)
	}
	t.Logf("executed %d, replayed %d, 409 %d", executed, replayed, conflicts)
}

func TestServerErrorNotRecorded(t *testing.T) {
	cmd := &command{status: http.StatusServiceUnavailable}
	store := idempotency.NewInMemoryStore()
	mw := idemhttp.New(idempotency.NewEngine(store, idempotency.WithDetachedRun(true)), idemhttp.WithAnonymous(true))(cmd)
	first := send(mw, "POST", "/", `{}`, "Idempotency-Key", "k")
	if first.Code != http.StatusServiceUnavailable || first.Body.String() != `{"run":1}` {
		t.Errorf("first = %d %s, want the handler's 503", first.Code, first.Body)
	}
	if store.Len() != 0 {
		t.Errorf("store holds %d records after a 5xx, want 0 (key released)", store.Len())
	}
	cmd.status = 0
	retry := send(mw, "POST", "/", `{}`, "Idempotency-Key", "k")
	wantRuns(t, cmd, 2)
	wantReplayed(t, retry, false)
	if retry.Code != http.StatusCreated {
		t.Errorf("retry status = %d, want 201", retry.Code)
	}
}

func TestClientErrorRecorded(t *testing.T) {
	cmd := &command{status: http.StatusBadRequest}
	mw := idemhttp.New(idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true)), idemhttp.WithAnonymous(true))(cmd)
	send(mw, "POST", "/", `{}`, "Idempotency-Key", "k")
	cmd.status = 0 // the handler would now succeed, but the verdict is recorded
	retry := send(mw, "POST", "/", `{}`, "Idempotency-Key", "k")
	wantRuns(t, cmd, 1)
	wantReplayed(t, retry, true)
	if retry.Code != http.StatusBadRequest {
		t.Errorf("retry status = %d, want the recorded 400", retry.Code)
	}
}

func TestPanicReleasesKey(t *testing.T) {
	panics := true
	runs := 0
	mw := idemhttp.New(idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true)), idemhttp.WithAnonymous(true))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs++
		if panics {
			panic("boom")
		}
		w.WriteHeader(http.StatusCreated)
	}))
	recovered := func() (v any) {
		defer func() { v = recover() }()
		send(mw, "POST", "/", `{}`, "Idempotency-Key", "k")
		return nil
	}()
	if recovered != "boom" {
		t.Errorf("recovered %v, want the handler's panic to go on", recovered)
	}
	panics = false
	retry := send(mw, "POST", "/", `{}`, "Idempotency-Key", "k")
	if runs != 2 || retry.Code != http.StatusCreated {
		t.Errorf("retry = %d after %d runs, want 201 after 2", retry.Code, runs)
	}
	wantReplayed(t, retry, false)
}

func TestBodyLimit(t *testing.T) {
	tests := []struct {
		name          string
		body          string
		unknownLength bool
		wantStatus    int
	}{
		{"at the limit", "12345678", false, http.StatusCreated},
		{"over, length declared", "123456789", false, http.StatusRequestEntityTooLarge},
		{"over, length unknown", "123456789", true, http.StatusRequestEntityTooLarge},
		{"far over, length unknown", strings.Repeat("x", 1<<16), true, http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := &command{}
			store := idempotency.NewInMemoryStore()
			mw := idemhttp.New(idempotency.NewEngine(store, idempotency.WithDetachedRun(true)), idemhttp.WithMaxBodyBytes(8), idemhttp.WithAnonymous(true))(cmd)
			req := httptest.NewRequest("POST", "/", strings.NewReader(tt.body))
			if tt.unknownLength {
				req.Body = io.NopCloser(io.MultiReader(strings.NewReader(tt.body)))
				req.ContentLength = -1
			}
			req.Header.Set("Idempotency-Key", "k")
			rr := httptest.NewRecorder()
			mw.ServeHTTP(rr, req)
			if tt.wantStatus != http.StatusRequestEntityTooLarge {
				if rr.Code != tt.wantStatus {
					t.Errorf("status = %d, want %d", rr.Code, tt.wantStatus)
				}
				return
			}
			wantProblem(t, rr, tt.wantStatus)
			wantRuns(t, cmd, 0)
			if store.Len() != 0 {
				t.Errorf("store holds %d records, want 0", store.Len())
			}
		})
	}
}

// TestBodyLimitOuterMaxBytesReader: an outer http.MaxBytesReader's limit is
// reported as 413 too.
func TestBodyLimitOuterMaxBytesReader(t *testing.T) {
	cmd := &command{}
	mw := idemhttp.New(idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true)), idemhttp.WithAnonymous(true))(cmd)
	outer := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 4)
		r.ContentLength = -1
		mw.ServeHTTP(w, r)
	})
	wantProblem(t, send(outer, "POST", "/", "123456", "Idempotency-Key", "k"), http.StatusRequestEntityTooLarge)
	wantRuns(t, cmd, 0)
}

func TestHandlerReadsTheWholeBody(t *testing.T) {
	const body = "{ \"b\": 1,\n  \"a\": 2 }"
	var got string
	var gotLen int64
	mw := idemhttp.New(idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true)), idemhttp.WithAnonymous(true))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got, gotLen = string(b), r.ContentLength
	}))
	send(mw, "POST", "/", body, "Idempotency-Key", "k", "Content-Type", "application/json")
	if got != body || gotLen != int64(len(body)) {
		t.Errorf("handler read %q (ContentLength %d), want the original %q (%d)", got, gotLen, body, len(body))
	}
}

func TestStoreUnavailable(t *testing.T) {
	cmd := &command{}
	var seen *idemhttp.Error
	mw := idemhttp.New(idempotency.NewEngine(failingStore{idempotency.NewInMemoryStore()}, idempotency.WithDetachedRun(true)), idemhttp.WithErrorHandler(func(w http.ResponseWriter, r *http.Request, e *idemhttp.Error) {
		seen = e
		idemhttp.WriteError(w, r, e)
	}), idemhttp.WithAnonymous(true))(cmd)
	rr := send(mw, "POST", "/", `{}`, "Idempotency-Key", "k")
	wantProblem(t, rr, http.StatusServiceUnavailable)
	wantRuns(t, cmd, 0)
	if rr.Header().Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	if strings.Contains(rr.Body.String(), "secret-internal-detail") || strings.Contains(rr.Body.String(), "10.1.2.3") {
		t.Errorf("the internal error reached the client: %s", rr.Body)
	}
	if seen == nil || !errors.Is(seen, idempotency.ErrStoreUnavailable) || !errors.Is(seen, errBackend) {
		t.Errorf("error handler got %v, want the store's error", seen)
	}
}

func TestErrorHandler(t *testing.T) {
	var got []error
	mw := idemhttp.New(idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true)), idemhttp.WithRequired(true), idemhttp.WithErrorHandler(func(w http.ResponseWriter, r *http.Request, e *idemhttp.Error) {
		got = append(got, e)
		w.WriteHeader(e.Status)
		fmt.Fprintf(w, `{"ok":false,"status":%d}`, e.Status)
	}), idemhttp.WithAnonymous(true))(&command{})
	send(mw, "POST", "/", `{"a":1}`, "Idempotency-Key", "k")
	tests := []struct {
		header []string
		body   string
		status int
		is     error
	}{
		{nil, `{}`, http.StatusBadRequest, idemhttp.ErrKeyMissing},
		{[]string{"Idempotency-Key", ""}, `{}`, http.StatusBadRequest, idempotency.ErrInvalidKey},
		{[]string{"Idempotency-Key", "k"}, `{"a":2}`, http.StatusUnprocessableEntity, idempotency.ErrMismatch},
	}
	for i, tt := range tests {
		rr := send(mw, "POST", "/", tt.body, tt.header...)
		if rr.Code != tt.status || rr.Header().Get("Content-Type") == "application/problem+json" {
			t.Errorf("case %d: %d %s, want %d from the custom handler", i, rr.Code, rr.Body, tt.status)
		}
		if len(got) != i+1 || !errors.Is(got[i], tt.is) {
			t.Errorf("case %d: handler got %v, want an error matching %v", i, got, tt.is)
		}
	}
}

func TestOtherMethodsPassThrough(t *testing.T) {
	cmd := &command{}
	store := idempotency.NewInMemoryStore()
	mw := idemhttp.New(idempotency.NewEngine(store, idempotency.WithDetachedRun(true)), idemhttp.WithAnonymous(true))(cmd)
	for _, method := range []string{"GET", "PUT", "DELETE", "HEAD"} {
		for range 2 {
			rr := send(mw, method, "/", "", "Idempotency-Key", "k")
			wantReplayed(t, rr, false)
		}
	}
	wantRuns(t, cmd, 8)
	if store.Len() != 0 {
		t.Errorf("store holds %d records, want 0", store.Len())
	}
	// A malformed key on a GET is not the middleware's business either.
	if rr := send(mw, "GET", "/", "", "Idempotency-Key", ""); rr.Code != http.StatusCreated {
		t.Errorf("GET with an empty key: status %d, want the handler's 201", rr.Code)
	}
}

func TestWithMethods(t *testing.T) {
	cmd := &command{}
	mw := idemhttp.New(idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true)), idemhttp.WithMethods("PUT"), idemhttp.WithAnonymous(true))(cmd)
	send(mw, "PUT", "/", "", "Idempotency-Key", "k")
	wantReplayed(t, send(mw, "PUT", "/", "", "Idempotency-Key", "k"), true)
	send(mw, "POST", "/", "", "Idempotency-Key", "k")
	wantRuns(t, cmd, 2)
}

func TestServeMuxPatterns(t *testing.T) {
	runs := 0
	item := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs++
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "item %s run %d", r.PathValue("id"), runs)
	})
	mux := http.NewServeMux()
	mux.Handle("POST /items/{id}", idemhttp.New(idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true)), idemhttp.WithRequired(true), idemhttp.WithAnonymous(true))(item))
	mux.Handle("GET /items/{id}", item)
	// The middleware around the whole mux works too.
	outer := http.NewServeMux()
	outer.Handle("POST /orders/{id}", item)
	mux.Handle("/orders/", idemhttp.New(idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true)), idemhttp.WithAnonymous(true))(outer))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	post := func(path, key string) (int, string, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", srv.URL+path, nil)
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, readAll(t, resp), resp.Header.Get("Idempotent-Replayed")
	}
	tests := []struct {
		path, key  string
		wantStatus int
		wantBody   string
		replayed   string
	}{
		{"/items/42", "a", 201, "item 42 run 1", ""},
		{"/items/42", "a", 201, "item 42 run 1", "true"},
		{"/items/43", "a", 422, "", ""},
		{"/items/43", "", 400, "", ""},
		{"/orders/7", "a", 201, "item 7 run 2", ""},
		{"/orders/7", "a", 201, "item 7 run 2", "true"},
	}
	for _, tt := range tests {
		status, body, replayed := post(tt.path, tt.key)
		if status != tt.wantStatus || (tt.wantBody != "" && body != tt.wantBody) || replayed != tt.replayed {
			t.Errorf("POST %s key %q = %d %q replayed %q, want %d %q replayed %q",
				tt.path, tt.key, status, body, replayed, tt.wantStatus, tt.wantBody, tt.replayed)
		}
	}
}

func TestHandlerGetsClaimToken(t *testing.T) {
	var tok idempotency.Token
	var ok bool
	mw := idemhttp.New(idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true)), idemhttp.WithAnonymous(true))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok = idempotency.TokenFromContext(r.Context())
	}))
	send(mw, "POST", "/", "", "Idempotency-Key", "k")
	if !ok || tok.Fence == 0 || tok.Key != "k" {
		t.Errorf("TokenFromContext = %+v, %v; want the claim's token", tok, ok)
	}
}

// TestClientDisconnect cancels the request's context while the handler runs:
// the handler's context stays live, it completes, and its response is
// recorded for the retry.
func TestClientDisconnect(t *testing.T) {
	started, proceed := make(chan struct{}), make(chan struct{})
	var cancelledSeen bool
	runs := 0
	mw := idemhttp.New(idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true)), idemhttp.WithAnonymous(true))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs++
		close(started)
		<-proceed
		select {
		case <-r.Context().Done():
			cancelledSeen = true
		default:
		}
		if r.Context().Value(ctxKey{}) != "request value" {
			t.Error("the handler's context lost the request's values")
		}
		w.WriteHeader(http.StatusCreated)
		fmt.Fprint(w, "charged")
	}))

	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "request value"))
	req := httptest.NewRequest("POST", "/", strings.NewReader(`{}`)).WithContext(ctx)
	req.Header.Set("Idempotency-Key", "k")
	done := make(chan struct{})
	go func() {
		defer close(done)
		mw.ServeHTTP(httptest.NewRecorder(), req)
	}()
	<-started
	cancel() // the client goes away
	close(proceed)
	<-done

	if cancelledSeen {
		t.Error("the handler's context was cancelled by the client leaving")
	}
	retry := send(mw, "POST", "/", `{}`, "Idempotency-Key", "k")
	wantReplayed(t, retry, true)
	if retry.Code != http.StatusCreated || retry.Body.String() != "charged" || runs != 1 {
		t.Errorf("retry = %d %q after %d runs, want the recorded 201 \"charged\" after 1", retry.Code, retry.Body, runs)
	}
}

type ctxKey struct{}

// TestClientGoneBeforeStart: a request whose client already left runs
// nothing and leaves the key free.
func TestClientGoneBeforeStart(t *testing.T) {
	cmd := &command{}
	store := idempotency.NewInMemoryStore()
	mw := idemhttp.New(idempotency.NewEngine(store, idempotency.WithDetachedRun(true)), idemhttp.WithAnonymous(true))(cmd)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req := httptest.NewRequest("POST", "/", strings.NewReader(`{}`)).WithContext(ctx)
	req.Header.Set("Idempotency-Key", "k")
	rr := httptest.NewRecorder()
	mw.ServeHTTP(rr, req)
	wantProblem(t, rr, http.StatusServiceUnavailable)
	wantRuns(t, cmd, 0)
	if store.Len() != 0 {
		t.Errorf("store holds %d records, want 0", store.Len())
	}
	if rr := send(mw, "POST", "/", `{}`, "Idempotency-Key", "k"); rr.Code != http.StatusCreated {
		t.Errorf("retry status = %d, want 201", rr.Code)
	}
	wantRuns(t, cmd, 1)
}

func TestNewWithoutStorePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("New(nil) did not panic")
		}
	}()
	idemhttp.New(nil)
}

func TestWithEngine(t *testing.T) {
	// A plain Store (no claim protocol) shared by two routes through one engine.
	engine := idempotency.NewEngine(plainStore{idempotency.NewInMemoryStore()})
	cmd := &command{}
	required := idemhttp.New(engine, idemhttp.WithRequired(true), idemhttp.WithAnonymous(true))(cmd)
	optional := idemhttp.New(engine, idemhttp.WithAnonymous(true))(cmd)
	send(required, "POST", "/", `{}`, "Idempotency-Key", "k")
	wantReplayed(t, send(optional, "POST", "/", `{}`, "Idempotency-Key", "k"), true)
	wantProblem(t, send(required, "POST", "/", `{}`), http.StatusBadRequest)
	wantRuns(t, cmd, 1)
}

// plainStore hides the claim protocol of the store it wraps.
type plainStore struct{ s *idempotency.InMemoryStore }

func (p plainStore) Lookup(ctx context.Context, key, identity string) (*idempotency.Cached, bool) {
	return p.s.Lookup(ctx, key, identity)
}

func (p plainStore) Store(ctx context.Context, key, identity string, c idempotency.Cached) error {
	return p.s.Store(ctx, key, identity, c)
}
