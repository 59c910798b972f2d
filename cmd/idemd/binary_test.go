package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/idemkit/idempotency/dispatcher"
)

// built is the idemd binary, built once for every test that runs it.
var built struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// buildIdemd builds the binary (go build -o <tmp>/idemd ./cmd/idemd).
func buildIdemd(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: not building the idemd binary")
	}
	built.once.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		built.dir, built.err = os.MkdirTemp("", "idemd-test-")
		if built.err != nil {
			return
		}
		built.path = filepath.Join(built.dir, "idemd")
		out, err := exec.Command(goTool, "build", "-o", built.path, ".").CombinedOutput()
		if err != nil {
			built.err = errors.New("go build: " + err.Error() + "\n" + string(out))
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.path
}

// lockedBuffer collects a process's output for the test log.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// proc is a running idemd binary.
type proc struct {
	cmd    *exec.Cmd
	client client
	out    *lockedBuffer
	exited chan struct{} // closed once the process was waited for
	err    error         // cmd.Wait's, once exited is closed
}

// startIdemd starts the binary on a free loopback port (-addr 127.0.0.1:0;
// the address is read from its "listening" log line) and kills it by PID
// when the test ends, if it is still running.
func startIdemd(t *testing.T, args ...string) *proc {
	t.Helper()
	path := buildIdemd(t)
	cmd := exec.Command(path, append([]string{"-addr", "127.0.0.1:0", "-log-format", "json"}, args...)...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "IDEMD_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	p := &proc{cmd: cmd, out: &lockedBuffer{}, exited: make(chan struct{})}
	cmd.Stderr = p.out
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			p.out.Write([]byte(line + "\n"))
			var l struct{ Msg, Addr string }
			if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "listening" {
				select {
				case addr <- l.Addr:
				default:
				}
			}
		}
		p.err = cmd.Wait() // after the last read of stdout, as Wait requires
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("idemd output:\n%s", p.out)
		}
	})
	select {
	case a := <-addr:
		p.client = client{base: "http://" + a, http: &http.Client{Timeout: time.Minute}}
	case <-p.exited:
		t.Fatalf("idemd exited before listening: %v\n%s", p.err, p.out)
	case <-time.After(time.Minute):
		t.Fatalf("idemd did not log its listening address within a minute:\n%s", p.out)
	}
	return p
}

// waitExit waits for the process to end, failing the test after limit.
func (p *proc) waitExit(t *testing.T, limit time.Duration) error {
	t.Helper()
	select {
	case <-p.exited:
		return p.err
	case <-time.After(limit):
		t.Fatalf("idemd still running %v after the signal", limit)
		return nil
	}
}

// onBinaryStores runs test as subtests, on the binary with the memory
// store and on PostgreSQL (a schema of the subtest's own); args are the
// -store flag.
func onBinaryStores(t *testing.T, test func(t *testing.T, args ...string)) {
	t.Run("memory", func(t *testing.T) { test(t) })
	t.Run("postgres", func(t *testing.T) { test(t, "-store", postgresURL(t)) })
}

func TestBinaryContract(t *testing.T) {
	onBinaryStores(t, func(t *testing.T, store ...string) {
		p := startIdemd(t, store...)
		testContract(t, p.client)
	})
}

func TestBinarySIGTERMLetsRunningCommandsFinish(t *testing.T) {
	onBinaryStores(t, testSIGTERMLetsRunningCommandsFinish)
}

func testSIGTERMLetsRunningCommandsFinish(t *testing.T, store ...string) {
	p := startIdemd(t, store...)
	c := p.client
	type result struct {
		r   reply
		err error
	}
	first := make(chan result, 1)
	go func() {
		r, err := c.send("reports.generate", `{"ms":500}`, "Idempotency-Key", "term-1")
		first <- result{r, err}
	}()
	c.waitMetric(t, runningSeries("reports.generate"), 1)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	res := <-first
	if res.err != nil {
		t.Fatalf("the running command: %v", res.err)
	}
	var rep struct {
		ReportID string `json:"report_id"`
	}
	res.r.data(t, 200, &rep)
	if err := p.waitExit(t, 30*time.Second); err != nil {
		t.Errorf("idemd exited with %v, want status 0", err)
	}
	if !strings.Contains(p.out.String(), `"msg":"stopped"`) {
		t.Errorf("no \"stopped\" log line")
	}
}

func TestBinarySIGTERMCancelsWhatItCannotFinish(t *testing.T) {
	onBinaryStores(t, testSIGTERMCancelsWhatItCannotFinish)
}

func testSIGTERMCancelsWhatItCannotFinish(t *testing.T, store ...string) {
	p := startIdemd(t, append([]string{"-shutdown-timeout", "100ms"}, store...)...)
	c := p.client
	type result struct {
		r   reply
		err error
	}
	first := make(chan result, 1)
	go func() {
		r, err := c.send("reports.generate", `{"ms":10000}`, "Idempotency-Key", "term-2")
		first <- result{r, err}
	}()
	c.waitMetric(t, runningSeries("reports.generate"), 1)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	res := <-first
	if res.err != nil {
		t.Fatalf("the running command: %v", res.err)
	}
	res.r.wantError(t, 503, dispatcher.CodeCancelled)
	if err := p.waitExit(t, 5*time.Second); err != nil {
		t.Errorf("idemd exited with %v, want status 0", err)
	}
}

func TestBinaryRejectsBadFlags(t *testing.T) {
	path := buildIdemd(t)
	tests := [][]string{
		{"-store", "bogus://x"},
		{"-ttl", "0s"},
		{"-log-format", "xml"},
		{"-log-level", "loud"},
		{"-nope"},
	}
	for _, args := range tests {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			out, err := exec.Command(path, args...).CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() == 0 {
				t.Errorf("got %v, want a non-zero exit\n%s", err, out)
			}
		})
	}
}
