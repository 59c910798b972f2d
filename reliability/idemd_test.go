package reliability

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idemkit/idempotency/dispatcher"
	"github.com/idemkit/idempotency/driver"
)

// idemdProc is a running idemd.
type idemdProc struct {
	cmd  *exec.Cmd
	addr string

	mu        sync.Mutex
	recordErr int // "command" log lines with a record_err: responses not recorded
	warnings  int
}

// startIdemd starts the idemd binary at bin on store spec and waits for it
// to listen. It is stopped when tb ends.
func startIdemd(tb testing.TB, bin, spec string, lease time.Duration) *idemdProc {
	tb.Helper()
	cmd := exec.Command(bin, "-addr", "127.0.0.1:0", "-store", spec, "-lease", lease.String(), "-ttl", "10m",
		"-log-format", "json", "-shutdown-timeout", "2s")
	// Records are named by an HMAC under a secret of this run's own, so
	// that they cannot meet anyone else's under idemd's fixed Redis prefix.
	cmd.Env = append(os.Environ(), "IDEMD_SECRET="+driver.NewOwner())
	out := startPiped(tb, cmd)
	p := &idemdProc{cmd: cmd}
	listening := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(out)
		s.Buffer(nil, 1<<20)
		for s.Scan() {
			var line struct {
				Msg       string `json:"msg"`
				Level     string `json:"level"`
				Addr      string `json:"addr"`
				RecordErr string `json:"record_err"`
			}
			if json.Unmarshal(s.Bytes(), &line) != nil {
				continue
			}
			p.mu.Lock()
			if line.RecordErr != "" {
				p.recordErr++
			}
			if line.Level == "WARN" || line.Level == "ERROR" {
				p.warnings++
			}
			p.mu.Unlock()
			if line.Msg == "listening" {
				listening <- line.Addr
			}
		}
	}()
	select {
	case p.addr = <-listening:
	case <-time.After(30 * time.Second):
		tb.Fatalf("idemd on %s did not start listening within 30s", spec)
	}
	return p
}

func (p *idemdProc) counts() (recordErr, warnings int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.recordErr, p.warnings
}

// idemloadReport is the part of idemload's JSON summary the soak reads.
type idemloadReport struct {
	Requests   int64   `json:"requests"`
	Throughput float64 `json:"throughput"`
	Outcomes   []struct {
		Outcome string `json:"outcome"`
		Count   int64  `json:"count"`
		P99     int64  `json:"p99_us"`
	} `json:"outcomes"`
	Errors       map[string]int64 `json:"errors"`
	DistinctKeys int              `json:"distinct_keys"`
	Unresolved   int              `json:"unresolved_keys"`
	Check        *struct {
		OK        bool   `json:"ok"`
		Created   int64  `json:"widgets_created"`
		Succeeded int    `json:"keys_succeeded"`
		Reason    string `json:"reason"`
	} `json:"exactly_once"`
}

func envDuration(name string, def time.Duration) time.Duration {
	d, err := time.ParseDuration(os.Getenv(name))
	if err != nil || d <= 0 {
		return def
	}
	return d
}

// TestIdemdUnderFaults is the end-to-end soak: the idemd server, on each
// store (Redis and PostgreSQL reached through a Proxy that cuts the store
// away for 500ms every 3s), loaded by idemload with many duplicates racing
// each other for RELIABILITY_SOAK_DURATION (default 10s). Pass: idemload's
// exactly-once check (widgets created = keys answered 2xx, every answer of
// a key the same bytes), no key left unresolved after its settle phase, and
// every probe sent while the store was cut answered 503 store_unavailable.
// It needs the binaries: scripts/soak.sh builds them and sets
// RELIABILITY_IDEMD and RELIABILITY_IDEMLOAD.
func TestIdemdUnderFaults(t *testing.T) {
	idemd, idemload := os.Getenv("RELIABILITY_IDEMD"), os.Getenv("RELIABILITY_IDEMLOAD")
	if idemd == "" || idemload == "" {
		t.Skip("end-to-end soak: run scripts/soak.sh, which builds cmd/idemd and cmd/idemload " +
			"and sets RELIABILITY_IDEMD and RELIABILITY_IDEMLOAD")
	}
	duration := envDuration("RELIABILITY_SOAK_DURATION", 10*time.Second)
	forEachBackend(t, func(t *testing.T, f *fixture) {
		spec := "memory"
		var proxy *Proxy
		switch f.name {
		case "redis":
			proxy, _ = f.proxied(t)
			spec = "redis://" + proxy.Addr() + "/0"
			if u, err := url.Parse(envOr("IDEMPOTENCY_REDIS_URL", defaultRedisURL)); err == nil {
				u.Host = proxy.Addr()
				spec = u.String()
			}
		case "postgres":
			proxy, _ = f.proxied(t)
			u, err := url.Parse(envOr("IDEMPOTENCY_POSTGRES_URL", defaultPostgresURL))
			if err != nil {
				t.Fatal(err)
			}
			u.Host = proxy.Addr()
			q := u.Query()
			q.Set("search_path", f.schema)
			u.RawQuery = q.Encode()
			spec = u.String()
		}
		srv := startIdemd(t, idemd, spec, 2*time.Second)
		base := "http://" + srv.addr

		stop := make(chan struct{})
		var faults sync.WaitGroup
		var mu sync.Mutex
		var probes, unavailable int
		var bad []string
		if proxy != nil {
			faults.Go(func() {
				client := &http.Client{Timeout: 5 * time.Second}
				for {
					select {
					case <-stop:
						return
					case <-time.After(3 * time.Second):
					}
					proxy.Set(Cut)
					status, code, err := probe(client, base)
					time.Sleep(500 * time.Millisecond) // the outage's length
					proxy.Set(Pass)
					mu.Lock()
					probes++
					if status == http.StatusServiceUnavailable && code == dispatcher.CodeStoreUnavailable {
						unavailable++
					} else {
						bad = append(bad, fmt.Sprintf("%d %q %v", status, code, err))
					}
					mu.Unlock()
				}
			})
		}
		cmd := exec.Command(idemload, "-url", base, "-duration", duration.String(), "-workers", "8",
			"-dup", "0.3", "-keys", "200", "-settle", "15s", "-json", "-quiet", "-label", f.name)
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		close(stop)
		faults.Wait()

		var rep idemloadReport
		if jerr := json.Unmarshal(out, &rep); jerr != nil {
			t.Fatalf("idemload: %v; output %q (%v)", err, out, jerr)
		}
		var outcomes []string
		for _, o := range rep.Outcomes {
			outcomes = append(outcomes, fmt.Sprintf("%s %d (p99 %dµs)", o.Outcome, o.Count, o.P99))
		}
		recordErr, warnings := srv.counts()
		t.Logf("%s, %v: %d requests (%.0f/s), %d keys; %s; errors %v; unresolved %d; store cut %d times, probes answered 503: %d; idemd warnings %d, responses not recorded %d",
			f.name, duration, rep.Requests, rep.Throughput, rep.DistinctKeys, strings.Join(outcomes, ", "), rep.Errors,
			rep.Unresolved, probes, unavailable, warnings, recordErr)
		if rep.Check != nil {
			t.Logf("exactly-once: ok %v, widgets created %d, keys succeeded %d %s", rep.Check.OK, rep.Check.Created, rep.Check.Succeeded, rep.Check.Reason)
		}
		switch {
		case rep.Check == nil:
			t.Errorf("idemload did not check exactly-once (exit: %v)", err)
		case !rep.Check.OK:
			t.Errorf("exactly-once violated: %s (idemload exit: %v)", rep.Check.Reason, err)
		}
		if rep.Unresolved > 0 {
			t.Errorf("%d keys still without a 2xx answer after the settle phase", rep.Unresolved)
		}
		if len(bad) > 0 {
			t.Errorf("probes while the store was cut, not 503 store_unavailable: %v", bad)
		}
	})
}
