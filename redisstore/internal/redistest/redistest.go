// Package redistest starts Redis servers of their own for the tests of the
// Redis stores (redisstore and rueidisstore): single nodes, and clusters.
package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/idemkit/idempotency"
	"github.com/redis/go-redis/v9"
)

// Unreachable skips the test, or fails it when IDEMPOTENCY_REQUIRE_BACKENDS=1.
func Unreachable(tb testing.TB, format string, args ...any) {
	tb.Helper()
	if os.Getenv("IDEMPOTENCY_REQUIRE_BACKENDS") == "1" {
		tb.Fatalf(format, args...)
	}
	tb.Skipf(format+" (IDEMPOTENCY_REQUIRE_BACKENDS=1 turns this skip into a failure)", args...)
}

// StartRedis starts a redis-server of its own on the loopback port, with no
// persistence and its files in dir, waits until it answers, and kills it
// (by its PID) when t ends. It returns the server's address.
func StartRedis(t testing.TB, dir string, port int, args ...string) string {
	t.Helper()
	server, err := exec.LookPath("redis-server")
	if err != nil {
		Unreachable(t, "redis-server is not on PATH (%v); install Redis to run this test, which starts its own servers", err)
	}
	p := strconv.Itoa(port)
	addr := "127.0.0.1:" + p
	cmd := exec.Command(server, append([]string{"--port", p, "--bind", "127.0.0.1", "--dir", dir,
		"--save", "", "--appendonly", "no", "--logfile", filepath.Join(dir, "redis-"+p+".log")}, args...)...)
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", server, err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() {
		if err := cmd.Process.Kill(); err != nil {
			t.Errorf("killing redis-server pid %d: %v", pid, err)
		}
		_ = cmd.Wait()
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	poll(ctx, t, "redis-server on "+addr+" to answer", func() bool { return c.Ping(ctx).Err() == nil })
	return addr
}

// poll calls ok every 50ms until it reports true, failing t when ctx ends.
func poll(ctx context.Context, t testing.TB, what string, ok func() bool) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !ok() {
		select {
		case <-ctx.Done():
			t.Fatalf("gave up waiting for %s", what)
		case <-tick.C:
		}
	}
}

// FreeClusterPorts returns n loopback ports that are free, as are their
// cluster bus ports (port + 10000).
func FreeClusterPorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for tries := 0; len(ports) < n; tries++ {
		if tries == 100 {
			t.Fatalf("found only %d free port pairs", len(ports))
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, l)
		port := l.Addr().(*net.TCPAddr).Port
		if port+10000 > 65535 {
			continue
		}
		bus, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+10000))
		if err != nil {
			continue
		}
		held = append(held, bus)
		ports = append(ports, port)
	}
	return ports
}

// StartCluster starts n redis-server processes in cluster mode on free
// loopback ports, joins them into one cluster with n masters, waits until
// every node reports cluster_state:ok, and kills them when t ends.
func StartCluster(t testing.TB, n int) []string {
	t.Helper()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		Unreachable(t, "redis-cli is not on PATH (%v); install Redis to run this test, which starts its own servers", err)
	}
	dir := t.TempDir()
	ports := FreeClusterPorts(t, n)
	addrs := make([]string, n)
	for i, port := range ports {
		addrs[i] = StartRedis(t, dir, port, "--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(dir, fmt.Sprintf("nodes-%d.conf", port)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	for _, addr := range addrs {
		c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
		poll(ctx, t, addr+" to report cluster_state:ok", func() bool {
			info, err := c.ClusterInfo(ctx).Result()
			return err == nil && strings.Contains(info, "cluster_state:ok")
		})
		c.Close()
	}
	return addrs
}

// WantClaims checks that claims, what Claims returned, are the claims of
// the record IDs want, each once, in any order.
func WantClaims(t testing.TB, claims []idempotency.RecordInfo, want []string) {
	t.Helper()
	missing := map[string]bool{}
	for _, id := range want {
		missing[id] = true
	}
	for _, cl := range claims {
		if !missing[cl.ID] {
			t.Errorf("Claims lists %+v, not one of the claims made, or twice", cl)
		}
		delete(missing, cl.ID)
	}
	if len(missing) > 0 {
		t.Errorf("Claims = %d claims, missing %d of the %d made", len(claims), len(missing), len(want))
	}
}

// ClaimsOnEveryMaster makes 30 claims with st, ("k0".."k29", "alice"), and
// checks that master (the master, or the part of the slots, that holds the
// record of key) spreads them over two masters at least, and that Claims
// lists each of them.
func ClaimsOnEveryMaster(t testing.TB, st idempotency.Inspector, master func(key string) (string, error)) {
	t.Helper()
	ctx := context.Background()
	var want []string
	masters := map[string]bool{}
	for i := range 30 {
		key := fmt.Sprint("k", i)
		if _, err := st.Begin(ctx, key, "alice", idempotency.ClaimRequest{Owner: "o", Lease: time.Minute}); err != nil {
			t.Fatal(err)
		}
		want = append(want, st.RecordID(key, "alice"))
		m, err := master(key)
		if err != nil {
			t.Fatal(err)
		}
		masters[m] = true
	}
	if len(masters) < 2 {
		t.Fatalf("30 claims live on %d masters, want them spread", len(masters))
	}
	claims, err := st.Claims(ctx, 0, 0)
	if err != nil {
		t.Fatalf("Claims = %v", err)
	}
	WantClaims(t, claims, want)
}
