package reliability

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-retryablehttp"

	"github.com/idemkit/idempotency/idemclient"
)

// The sidecar end to end: a real upstream process that counts what it
// executes, the idemd binary in front of it (idemd -upstream), a proxy that
// loses answers between the client and idemd, and go-retryablehttp
// retrying through it. Every request must run upstream once.

// upstreamEnv, set, makes this test binary the counting upstream (see
// runCountingUpstream) instead of running tests: init runs before TestMain.
const upstreamEnv = "RELIABILITY_SIDECAR_UPSTREAM"

func init() {
	if os.Getenv(upstreamEnv) == "" {
		return
	}
	if err := runCountingUpstream(); err != nil {
		fmt.Println("fatal", err)
		os.Exit(2)
	}
	os.Exit(0)
}

// runCountingUpstream serves POST /orders (201, a fresh order number, its
// ETag; a key starting "hangup-" is executed and its connection closed
// without an answer) and GET /counts (executions by Idempotency-Key), and
// prints "listening ADDR".
func runCountingUpstream() error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	var (
		mu     sync.Mutex
		counts = make(map[string]int)
		seq    int
	)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		key := r.Header.Get("Idempotency-Key")
		mu.Lock()
		counts[key]++
		seq++
		n := seq
		mu.Unlock()
		if strings.HasPrefix(key, "hangup-") {
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				conn.Close()
			}
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("ETag", fmt.Sprintf(`"o%d"`, n))
		w.Header().Set("Set-Cookie", "upstream-session=s"+fmt.Sprint(n))
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"order":%d,"key":%q}`, n, key)
	})
	mux.HandleFunc("GET /counts", func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		_ = json.NewEncoder(w).Encode(counts)
	})
	fmt.Println("listening", ln.Addr().String())
	return http.Serve(ln, mux)
}

// startPiped starts cmd with its stderr on the test's and returns its
// stdout; the process is stopped (SIGTERM, then kill after 15s) when tb
// ends.
func startPiped(tb testing.TB, cmd *exec.Cmd) io.Reader {
	tb.Helper()
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	return out
}

// startProcess starts cmd, waits for the line its listening returns an
// address from, and stops the process (SIGTERM, then kill) when tb ends.
func startProcess(tb testing.TB, cmd *exec.Cmd, listening func(line string) string) string {
	tb.Helper()
	out := startPiped(tb, cmd)
	addr := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(out)
		for s.Scan() {
			if a := listening(s.Text()); a != "" {
				select {
				case addr <- a:
				default:
				}
			}
		}
	}()
	select {
	case a := <-addr:
		return a
	case <-time.After(60 * time.Second):
		tb.Fatalf("%s did not start listening", cmd.Path)
		return ""
	}
}

// lossyProxy forwards to target and loses the answer to the first attempt
// of every key, and to the second of one key in three, after target has
// answered: the client sees its connection drop and retries.
type lossyProxy struct {
	target string
	client *http.Client

	mu       sync.Mutex
	attempts map[string]int
	lost     int
}

func (p *lossyProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("Idempotency-Key")
	p.mu.Lock()
	p.attempts[key]++
	attempt := p.attempts[key]
	p.mu.Unlock()
	body, _ := io.ReadAll(r.Body)
	out, _ := http.NewRequest(r.Method, p.target+r.URL.RequestURI(), bytes.NewReader(body))
	out.Header = r.Header.Clone()
	res, err := p.client.Do(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer res.Body.Close()
	answer, err := io.ReadAll(res.Body)
	var n int
	fmt.Sscanf(strings.TrimPrefix(key, "k-"), "%d", &n)
	if err != nil || attempt == 1 || (attempt == 2 && n%3 == 0) {
		p.mu.Lock()
		p.lost++
		p.mu.Unlock()
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close() // the answer is lost
		}
		return
	}
	for k, vs := range res.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(res.StatusCode)
	_, _ = w.Write(answer)
}

// retrier sends one POST with the key through its client, retrying as it
// does, and returns the last answer.
type retrier struct {
	name string
	// minHangupAttempts is how many attempts a hang-up key makes at least:
	// every one of them gets the recorded 502 back.
	minHangupAttempts int
	do                func(url, key string) (*http.Response, error)
}

func TestSidecarEveryRequestRunsUpstreamOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds and runs idemd and an upstream process")
	}
	bin := idemdBinary(t)
	rc := retryablehttp.NewClient()
	rc.Logger = nil
	rc.RetryMax = 5
	rc.RetryWaitMin, rc.RetryWaitMax = time.Millisecond, 10*time.Millisecond
	rc.ErrorHandler = retryablehttp.PassthroughErrorHandler // the last answer, not an error
	ic := &http.Client{Transport: idemclient.New(idemclient.WithMaxAttempts(6),
		idemclient.WithBackoff(time.Millisecond, 10*time.Millisecond))}
	newRequest := func(url, key string) *http.Request {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"item":"book"}`))
		req.Header.Set("Idempotency-Key", key)
		req.Header.Set("Authorization", "Bearer alice")
		req.Header.Set("Content-Type", "application/json")
		return req
	}
	retriers := []retrier{
		// go-retryablehttp retries the 502 too, and gets it back each time.
		{"go-retryablehttp", rc.RetryMax + 1, func(url, key string) (*http.Response, error) {
			req, err := retryablehttp.FromRequest(newRequest(url, key))
			if err != nil {
				return nil, err
			}
			return rc.Do(req)
		}},
		// idemclient does not retry a 502: the lost first answer, then the replay.
		{"idemclient", 2, func(url, key string) (*http.Response, error) {
			return ic.Do(newRequest(url, key))
		}},
	}
	for _, r := range retriers {
		t.Run(r.name, func(t *testing.T) { sidecarUnderLoss(t, bin, r) })
	}
}

// sidecarUnderLoss sends requests with r through the lossy proxy to idemd
// in front of the counting upstream, and checks each ran upstream once.
func sidecarUnderLoss(t *testing.T, bin string, r retrier) {
	up := exec.Command(os.Args[0], "-test.run=^$")
	up.Env = append(os.Environ(), upstreamEnv+"=1")
	upAddr := startProcess(t, up, func(line string) string {
		a, _ := strings.CutPrefix(line, "listening ")
		return a
	})
	idemd := exec.Command(bin, "-addr", "127.0.0.1:0", "-upstream", "http://"+upAddr, "-paths", "/orders",
		"-log-format", "json", "-shutdown-timeout", "2s")
	idemdAddr := startProcess(t, idemd, func(line string) string {
		var l struct{ Msg, Addr string }
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "listening" {
			return l.Addr
		}
		return ""
	})
	lossy := &lossyProxy{target: "http://" + idemdAddr, client: &http.Client{Transport: &http.Transport{}},
		attempts: make(map[string]int)}
	proxy := httptest.NewServer(lossy)
	defer proxy.Close()

	const keys, hangups, workers = 120, 6, 8

	type result struct {
		key      string
		status   int
		etag     string
		replayed bool
		body     string
		err      error
	}
	jobs := make(chan string)
	results := make(chan result)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for key := range jobs {
				res, err := r.do(proxy.URL+"/orders", key)
				if err != nil {
					results <- result{key: key, err: err}
					continue
				}
				b, err := io.ReadAll(res.Body)
				res.Body.Close()
				results <- result{key, res.StatusCode, res.Header.Get("ETag"), res.Header.Get("Idempotent-Replayed") == "true", string(b), err}
			}
		})
	}
	go func() {
		for i := range keys {
			jobs <- fmt.Sprintf("k-%d", i)
		}
		for i := range hangups {
			jobs <- fmt.Sprintf("hangup-%d", i)
		}
		close(jobs)
		wg.Wait()
		close(results)
	}()
	var got []result
	for r := range results {
		got = append(got, r)
	}

	res, err := http.Get("http://" + upAddr + "/counts")
	if err != nil {
		t.Fatal(err)
	}
	var counts map[string]int
	err = json.NewDecoder(res.Body).Decode(&counts)
	res.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != keys+hangups {
		t.Fatalf("%d results, want %d", len(got), keys+hangups)
	}
	for _, g := range got {
		if g.err != nil {
			t.Errorf("%s: %v", g.key, g.err)
			continue
		}
		if n := counts[g.key]; n != 1 {
			t.Errorf("%s ran upstream %d times, want 1", g.key, n)
		}
		if strings.HasPrefix(g.key, "hangup-") {
			if g.status != http.StatusBadGateway || !strings.Contains(g.body, "upstream-outcome-unknown") {
				t.Errorf("%s: %d %s, want 502 upstream-outcome-unknown", g.key, g.status, g.body)
			}
			continue
		}
		var order struct {
			Order int
			Key   string
		}
		if g.status != http.StatusCreated || json.Unmarshal([]byte(g.body), &order) != nil || order.Key != g.key {
			t.Errorf("%s: %d %s", g.key, g.status, g.body)
			continue
		}
		if want := fmt.Sprintf(`"o%d"`, order.Order); g.etag != want {
			t.Errorf("%s: ETag %q, want the upstream's %q", g.key, g.etag, want)
		}
		if !g.replayed { // the first answer was always lost
			t.Errorf("%s: the answer is not a replay", g.key)
		}
	}
	total := 0
	for _, n := range counts {
		total += n
	}
	lossy.mu.Lock()
	defer lossy.mu.Unlock()
	t.Logf("%d requests, %d answers lost and retried, %d upstream executions", keys+hangups, lossy.lost, total)
	if total != keys+hangups {
		t.Errorf("upstream executed %d requests, want %d", total, keys+hangups)
	}
	for i := range hangups {
		// Every retry of a hang-up reached idemd and got the recorded
		// answer back. (More attempts than retries arrive: the client's own
		// Transport sends a request with an Idempotency-Key again by itself
		// when its connection drops before the answer.)
		if key := fmt.Sprintf("hangup-%d", i); lossy.attempts[key] < r.minHangupAttempts {
			t.Errorf("%s: %d attempts, want at least %d", key, lossy.attempts[key], r.minHangupAttempts)
		}
	}
}
