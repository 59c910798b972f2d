package redisstore

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// startRedis starts a redis-server of its own on the loopback port, with no
// persistence and its files in dir, waits until it answers, and kills it
// (by its PID) when t ends. It returns the server's address.
func startRedis(t *testing.T, dir string, port int, args ...string) string {
	t.Helper()
	server, err := exec.LookPath("redis-server")
	if err != nil {
		unreachable(t, "redis-server is not on PATH (%v); install Redis to run this test, which starts its own servers", err)
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
func poll(ctx context.Context, t *testing.T, what string, ok func() bool) {
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

// freeClusterPorts returns n loopback ports that are free, as are their
// cluster bus ports (port + 10000).
func freeClusterPorts(t *testing.T, n int) []int {
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
