package reliability

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/driver"
	"github.com/idemkit/idempotency/pgstore"
	"github.com/idemkit/idempotency/redisstore"
)

// The holder process: this test binary, re-executed with RELIABILITY_HELPER
// set, claims a key in a real store and then waits to be killed, stopped or
// told (on stdin) to go on. It talks to the test on stdout, one line per
// event:
//
//	claimed <fence>        Begin acquired the key (mode "claim")
//	running <fence>        the handler started (mode "do")
//	complete ok|lease_lost|error <detail>    after "complete" on stdin (mode "claim")
//	effect <fence>         the handler is about to make its effect (mode "do")
//	done recorded|record_lost|cancelled|error <detail>   Engine.Do returned (mode "do")
//	effect <fence>, at <point>   (mode "crash": see crash_test.go)
func TestMain(m *testing.M) {
	if mode := os.Getenv("RELIABILITY_HELPER"); mode != "" {
		if err := holder(mode); err != nil {
			fmt.Println("fatal", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// helperStore opens the store the environment describes (see fixture.env).
// RELIABILITY_ADDR, when set, is the host:port its client dials instead of
// the server's (a Proxy in front of it).
func helperStore() (idempotency.ClaimStore, func(), error) {
	addr := os.Getenv("RELIABILITY_ADDR")
	switch os.Getenv("RELIABILITY_BACKEND") {
	case "memory":
		return idempotency.NewInMemoryStore(), func() {}, nil
	case "redis":
		opt, err := redis.ParseURL(envOr("IDEMPOTENCY_REDIS_URL", defaultRedisURL))
		if err != nil {
			return nil, nil, err
		}
		if addr != "" {
			opt.Addr = addr
		}
		c := redis.NewClient(opt)
		return redisstore.New(c, redisstore.WithPrefix(os.Getenv("RELIABILITY_PREFIX"))), func() { c.Close() }, nil
	case "postgres":
		cfg, err := pgxpool.ParseConfig(envOr("IDEMPOTENCY_POSTGRES_URL", defaultPostgresURL))
		if err != nil {
			return nil, nil, err
		}
		if addr != "" {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, nil, err
			}
			p, err := strconv.Atoi(port)
			if err != nil {
				return nil, nil, err
			}
			cfg.ConnConfig.Host, cfg.ConnConfig.Port, cfg.ConnConfig.Fallbacks = host, uint16(p), nil
		}
		pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
		if err != nil {
			return nil, nil, err
		}
		s, err := pgstore.New(pool, pgstore.WithSchema(os.Getenv("RELIABILITY_SCHEMA")))
		if err != nil {
			pool.Close()
			return nil, nil, err
		}
		return s, pool.Close, nil
	}
	return nil, nil, fmt.Errorf("RELIABILITY_BACKEND %q", os.Getenv("RELIABILITY_BACKEND"))
}

func holder(mode string) error {
	store, closeStore, err := helperStore()
	if err != nil {
		return err
	}
	defer closeStore()
	key, identity := os.Getenv("RELIABILITY_KEY"), os.Getenv("RELIABILITY_IDENTITY")
	lease, err := time.ParseDuration(os.Getenv("RELIABILITY_LEASE"))
	if err != nil {
		return err
	}
	stdin := bufio.NewScanner(os.Stdin)
	ctx := context.Background()
	switch mode {
	case "crash":
		return crashHolder(ctx, store, stdin, key, identity, lease)
	case "claim":
		cl, err := store.Begin(ctx, key, identity, idempotency.ClaimRequest{Fingerprint: "fp", Owner: driver.NewOwner(), Lease: lease})
		if err != nil {
			return err
		}
		if cl.Status != idempotency.ClaimAcquired {
			return fmt.Errorf("begin: %v", cl.Status)
		}
		fmt.Println("claimed", cl.Token.Fence)
		for stdin.Scan() {
			if stdin.Text() != "complete" {
				continue
			}
			err := store.Complete(ctx, cl.Token, idempotency.Cached{Status: 201, WireBody: []byte(`"stale"`)})
			switch {
			case err == nil:
				fmt.Println("complete ok")
			case errors.Is(err, idempotency.ErrLeaseLost):
				fmt.Println("complete lease_lost")
			default:
				fmt.Println("complete error", err)
			}
			return nil
		}
		return stdin.Err()
	case "do":
		e := idempotency.NewEngine(store, idempotency.WithLease(lease))
		res, err := e.Do(ctx, idempotency.Request{Key: key, Identity: identity, Fingerprint: "fp"}, func(ctx context.Context) (idempotency.Response, error) {
			tok, _ := idempotency.TokenFromContext(ctx)
			fmt.Println("running", tok.Fence)
			for stdin.Scan() {
				if stdin.Text() == "go" {
					break
				}
			}
			if err := ctx.Err(); err != nil {
				return idempotency.Response{}, context.Cause(ctx)
			}
			fmt.Println("effect", tok.Fence)
			return idempotency.Response{Status: 201, Body: []byte(`"stale"`)}, nil
		})
		switch {
		case err != nil && (errors.Is(err, idempotency.ErrLeaseLost) || errors.Is(err, idempotency.ErrLeaseExpired)):
			fmt.Println("done cancelled", err)
		case err != nil:
			fmt.Println("done error", err)
		case res.Recorded:
			fmt.Println("done recorded")
		default:
			fmt.Println("done record_lost", res.RecordErr)
		}
		return nil
	}
	return fmt.Errorf("unknown helper mode %q", mode)
}

// holderProc is a running holder process.
type holderProc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string // its stdout, line by line; closed at EOF
}

// startHolder starts a holder process in mode on f's namespace, for
// (key, identity) with the given lease. It is killed when tb ends.
func startHolder(tb testing.TB, f *fixture, mode, key, identity string, lease time.Duration) *holderProc {
	tb.Helper()
	return startHolderEnv(tb, f, mode, key, identity, lease)
}

// startHolderEnv is startHolder with more variables in the holder's
// environment (NAME=value).
func startHolderEnv(tb testing.TB, f *fixture, mode, key, identity string, lease time.Duration, env ...string) *holderProc {
	tb.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), f.env...)
	cmd.Env = append(cmd.Env, "RELIABILITY_HELPER="+mode, "RELIABILITY_KEY="+key,
		"RELIABILITY_IDENTITY="+identity, "RELIABILITY_LEASE="+lease.String())
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	h := &holderProc{cmd: cmd, stdin: stdin, lines: make(chan string, 16)}
	go func() {
		defer close(h.lines)
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			h.lines <- s.Text()
		}
	}()
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return h
}

// expect waits (at most timeout) for the holder's next line, which must
// start with word, and returns the rest of it.
func (h *holderProc) expect(tb testing.TB, word string, timeout time.Duration) string {
	tb.Helper()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case line, ok := <-h.lines:
		if !ok {
			tb.Fatalf("holder exited before saying %q", word)
		}
		rest, found := strings.CutPrefix(line, word)
		if !found {
			tb.Fatalf("holder said %q, want %q…", line, word)
		}
		return strings.TrimSpace(rest)
	case <-t.C:
		tb.Fatalf("holder did not say %q within %v", word, timeout)
	}
	return ""
}

// await waits (at most 30s: a race-enabled binary starts slowly on a busy
// machine) for the holder to say line; each line before it must be one
// that other takes (returns true for).
func (h *holderProc) await(tb testing.TB, line string, other func(string) bool) {
	tb.Helper()
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case got, ok := <-h.lines:
			switch {
			case !ok:
				tb.Fatalf("holder exited before saying %q", line)
			case got == line:
				return
			case !other(got):
				tb.Fatalf("holder said %q, want %q", got, line)
			}
		case <-t.C:
			tb.Fatalf("holder did not say %q within 30s", line)
		}
	}
}

func (h *holderProc) expectFence(tb testing.TB, word string) uint64 {
	tb.Helper()
	s := h.expect(tb, word, 30*time.Second) // a race-enabled binary starts slowly on a busy machine
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		tb.Fatalf("holder said %s %q: not a fence", word, s)
	}
	return n
}

func (h *holderProc) send(tb testing.TB, line string) {
	tb.Helper()
	if _, err := io.WriteString(h.stdin, line+"\n"); err != nil {
		tb.Fatalf("writing to holder: %v", err)
	}
}

func (h *holderProc) signal(tb testing.TB, sig syscall.Signal) {
	tb.Helper()
	if err := h.cmd.Process.Signal(sig); err != nil {
		tb.Fatalf("signal %v: %v", sig, err)
	}
}
