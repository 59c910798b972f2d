package reliability

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemkit/idempotency/idemclient"
)

// idemdBinary is RELIABILITY_IDEMD, or idemd built into a directory of
// t's (go build, through go.work). -short skips the build.
func idemdBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("RELIABILITY_IDEMD"); p != "" {
		return p
	}
	if testing.Short() {
		t.Skip("-short: not building the idemd binary (set RELIABILITY_IDEMD to use a built one)")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	path := filepath.Join(t.TempDir(), "idemd")
	out, err := exec.Command(goTool, "build", "-o", path, "github.com/idemkit/idempotency/cmd/idemd").CombinedOutput()
	if err != nil {
		t.Fatalf("go build idemd (through go.work; or set RELIABILITY_IDEMD): %v\n%s", err, out)
	}
	return path
}

// lossyClient is idemd behind a Proxy and idemclient in front of it: the
// callers' commands go through the proxy, the checks (widgets.list) go to
// idemd directly.
type lossyClient struct {
	idemd  *idemdProc
	proxy  *Proxy
	client *http.Client
	direct *http.Client
	sent   atomic.Int64 // attempts idemclient sent through the proxy
	busy   atomic.Int64 // of which answered 409 (in flight)

	mu     sync.Mutex
	failed map[string]bool // keys with an attempt that got no answer
}

// keysFailed is how many keys had an attempt that got no answer.
func (c *lossyClient) keysFailed() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.failed)
}

// newLossyClient starts idemd (in-memory store) behind a Proxy in mode
// Pass. attemptTimeout is how long an attempt waits for its answer: a reply
// lost is a reply late.
func newLossyClient(t *testing.T, bin string, attemptTimeout time.Duration) *lossyClient {
	t.Helper()
	srv := startIdemd(t, bin, "memory", 2*time.Second)
	proxy, err := NewProxy(srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	base := &http.Transport{MaxIdleConnsPerHost: 64}
	t.Cleanup(base.CloseIdleConnections)
	c := &lossyClient{idemd: srv, proxy: proxy, direct: &http.Client{Timeout: 10 * time.Second}, failed: make(map[string]bool)}
	counted := roundTripper(func(req *http.Request) (*http.Response, error) {
		c.sent.Add(1)
		resp, err := base.RoundTrip(req)
		if err == nil && resp.StatusCode == http.StatusConflict {
			c.busy.Add(1)
		}
		if err != nil {
			c.mu.Lock()
			c.failed[req.Header.Get(idemclient.HeaderKey)] = true
			c.mu.Unlock()
		}
		return resp, err
	})
	c.client = &http.Client{Transport: idemclient.New(
		idemclient.WithBase(counted),
		idemclient.WithAttemptTimeout(attemptTimeout),
		idemclient.WithBackoff(20*time.Millisecond, 200*time.Millisecond),
		idemclient.WithMaxAttempts(100), // the context is the bound
	)}
	return c
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// created is one caller's answer to widgets.create.
type created struct {
	id       string
	replayed bool
	attempts int
}

// create sends widgets.create {"name":name} through the proxy and returns
// the 201's widget id.
func (c *lossyClient) create(ctx context.Context, name string) (created, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+c.proxy.Addr()+"/v1/commands/widgets.create",
		strings.NewReader(fmt.Sprintf(`{"name":%q}`, name)))
	if err != nil {
		return created{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer idemclient-e2e")
	resp, err := c.client.Do(req)
	if err != nil {
		return created{}, err
	}
	defer resp.Body.Close()
	var env envelope
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		return created{}, fmt.Errorf("%d: decoding the envelope: %w", resp.StatusCode, err)
	}
	var data struct {
		ID   json.RawMessage `json:"id"`
		Name string          `json:"name"`
	}
	if resp.StatusCode != http.StatusCreated || json.Unmarshal(env.Data, &data) != nil || len(data.ID) == 0 || data.Name != name {
		return created{}, fmt.Errorf("got %d %+v %s, want 201 with the widget %q", resp.StatusCode, env.Error, env.Data, name)
	}
	return created{id: string(data.ID), replayed: idemclient.Replayed(resp), attempts: idemclient.Attempts(resp)}, nil
}

// widgets lists the ids of every widget idemd holds, asking it directly.
func (c *lossyClient) widgets(t *testing.T) []string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+c.idemd.addr+"/v1/commands/widgets.list", strings.NewReader(`{}`))
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.direct.Do(req)
	if err != nil {
		t.Fatalf("widgets.list: %v", err)
	}
	defer resp.Body.Close()
	var env envelope
	var data struct {
		Widgets []struct {
			ID json.RawMessage `json:"id"`
		} `json:"widgets"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil || json.Unmarshal(env.Data, &data) != nil {
		t.Fatalf("widgets.list: %d %v %s", resp.StatusCode, err, env.Data)
	}
	ids := make([]string, len(data.Widgets))
	for i, w := range data.Widgets {
		ids[i] = string(w.ID)
	}
	return ids
}

// checkOnce checks that the widgets idemd holds are exactly those the
// callers were answered with: every command ran once, and every caller got
// its own command's answer.
func checkOnce(t *testing.T, c *lossyClient, answers []created) {
	t.Helper()
	got := c.widgets(t)
	want := make([]string, 0, len(answers))
	for _, a := range answers {
		want = append(want, a.id)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("idemd holds %d widgets, callers were answered with %d ids (want the same set):\nheld     %v\nanswered %v",
			len(got), len(want), got, want)
	}
	if len(slices.Compact(want)) != len(answers) {
		t.Errorf("two callers were answered with the same widget")
	}
}

// TestIdemclientThroughLossyProxy runs idemclient against the idemd binary
// through a Proxy that loses idemd's replies after idemd executed the
// commands: every command runs once and every caller gets its 201.
func TestIdemclientThroughLossyProxy(t *testing.T) {
	bin := idemdBinary(t)

	// Every caller's first reply is lost: the proxy drops replies until
	// idemd has executed every command, so each caller's answer must be
	// the replay its retry gets.
	t.Run("first replies lost", func(t *testing.T) {
		c := newLossyClient(t, bin, 300*time.Millisecond)
		const callers = 32
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c.proxy.Set(DropReplies)
		start := time.Now()
		answers := make([]created, callers)
		errs := make([]error, callers)
		var wg sync.WaitGroup
		for i := range callers {
			wg.Go(func() { answers[i], errs[i] = c.create(ctx, fmt.Sprintf("lost-%d", i)) })
		}
		// Replies flow again once idemd has run every command (it is asked
		// directly, not through the proxy) and every caller's first
		// attempt has given up on its answer (the attempt timeout): an
		// answer written after that goes to a closed connection.
		tick := time.NewTicker(20 * time.Millisecond)
		for (c.keysFailed() < callers || len(c.widgets(t)) < callers) && ctx.Err() == nil {
			<-tick.C
		}
		tick.Stop()
		c.proxy.Set(Pass)
		wg.Wait()
		elapsed := time.Since(start)
		replays := 0
		for i, err := range errs {
			if err != nil {
				t.Fatalf("caller %d: %v", i, err)
			}
			if answers[i].replayed {
				replays++
			}
		}
		if replays != callers {
			t.Errorf("%d of %d answers replayed, want all (every first reply was lost)", replays, callers)
		}
		checkOnce(t, c, answers)
		t.Logf("%d callers, every first reply lost: %d widgets, %d answers replayed, %d attempts sent, %v",
			callers, len(c.widgets(t)), replays, c.sent.Load(), elapsed.Round(time.Millisecond))
	})

	// The proxy flips between passing and dropping replies (windows of a
	// few tens of milliseconds) while callers send commands one after
	// another for RELIABILITY_IDEMCLIENT_DURATION (default 3s).
	t.Run("replies lost at random", func(t *testing.T) {
		c := newLossyClient(t, bin, 300*time.Millisecond)
		const workers = 16
		duration := envDuration("RELIABILITY_IDEMCLIENT_DURATION", 3*time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), duration+time.Minute)
		defer cancel()
		stop := make(chan struct{})
		var flips sync.WaitGroup
		var drops atomic.Int64
		flips.Go(func() {
			defer c.proxy.Set(Pass)
			for {
				c.proxy.Set(DropReplies)
				drops.Add(1)
				select {
				case <-stop:
					return
				case <-time.After(time.Duration(5+rand.IntN(30)) * time.Millisecond):
				}
				c.proxy.Set(Pass)
				select {
				case <-stop:
					return
				case <-time.After(time.Duration(10+rand.IntN(40)) * time.Millisecond):
				}
			}
		})
		start := time.Now()
		results := make([][]created, workers)
		errs := make([]error, workers)
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for j := 0; time.Since(start) < duration; j++ {
					a, err := c.create(ctx, fmt.Sprintf("flip-%d-%d", w, j))
					if err != nil {
						errs[w] = fmt.Errorf("command %d: %w", j, err)
						return
					}
					results[w] = append(results[w], a)
				}
			})
		}
		wg.Wait()
		close(stop)
		flips.Wait()
		elapsed := time.Since(start)
		for w, err := range errs {
			if err != nil {
				t.Fatalf("caller %d: %v", w, err)
			}
		}
		answers := slices.Concat(results...)
		replays, retried, most := 0, 0, 0
		for _, a := range answers {
			if a.replayed {
				replays++
			}
			if a.attempts > 1 {
				retried++
			}
			most = max(most, a.attempts)
		}
		checkOnce(t, c, answers)
		if replays == 0 {
			t.Errorf("no answer was a replay in %d drop windows: the proxy lost no reply", drops.Load())
		}
		t.Logf("%d commands by %d callers in %v, %d drop windows: %d widgets, %d answers replayed, %d retried (at most %d attempts), %d attempts sent",
			len(answers), workers, elapsed.Round(time.Millisecond), drops.Load(), len(c.widgets(t)), replays, retried, most, c.sent.Load())
	})

	// Callers race one key on a command that takes 1.5s: all but the one
	// that runs it get idemd's 409 (Retry-After: 1) until it is done, then
	// its answer as a replay.
	t.Run("in flight", func(t *testing.T) {
		// The attempt timeout outlasts the command: the caller that runs it
		// waits for its answer instead of retrying.
		c := newLossyClient(t, bin, 10*time.Second)
		const callers = 8
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		key := idemclient.NewKey()
		type answer struct {
			report   string
			replayed bool
			attempts int
			err      error
		}
		answers := make([]answer, callers)
		start := time.Now()
		var wg sync.WaitGroup
		for i := range callers {
			wg.Go(func() {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+c.proxy.Addr()+"/v1/commands/reports.generate",
					strings.NewReader(`{"ms":1500}`))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set(idemclient.HeaderKey, key)
				resp, err := c.client.Do(req)
				if err != nil {
					answers[i].err = err
					return
				}
				defer resp.Body.Close()
				var env envelope
				var data struct {
					Report string `json:"report_id"`
				}
				if err := json.NewDecoder(resp.Body).Decode(&env); err != nil || resp.StatusCode != http.StatusOK ||
					json.Unmarshal(env.Data, &data) != nil || data.Report == "" {
					answers[i].err = fmt.Errorf("got %d %+v %s (%v), want 200 with a report_id", resp.StatusCode, env.Error, env.Data, err)
					return
				}
				answers[i] = answer{report: data.Report, replayed: idemclient.Replayed(resp), attempts: idemclient.Attempts(resp)}
			})
		}
		wg.Wait()
		fresh := 0
		for i, a := range answers {
			if a.err != nil {
				t.Fatalf("caller %d: %v", i, a.err)
			}
			if a.report != answers[0].report {
				t.Errorf("caller %d got report %s, caller 0 %s: want one execution's answer", i, a.report, answers[0].report)
			}
			if !a.replayed {
				fresh++
			} else if a.attempts < 2 {
				t.Errorf("caller %d: a replay at its first attempt, want its 409 first", i)
			}
		}
		if fresh != 1 {
			t.Errorf("%d callers got a fresh answer, want 1", fresh)
		}
		t.Logf("%d callers on one key of a 1.5s command: 1 report, %d fresh, %d 409s answered, %d attempts sent, %v",
			callers, fresh, c.busy.Load(), c.sent.Load(), time.Since(start).Round(time.Millisecond))
	})
}
