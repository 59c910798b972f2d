package reliability

import (
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

func TestLedgerCheck(t *testing.T) {
	var l Ledger
	a, b, c := Pair("a", "x"), Pair("b", "x"), Pair("c", "x")
	l.Record(a)
	if err := l.Check([]string{a}); err != nil {
		t.Errorf("one effect for a success: %v", err)
	}
	if err := l.Check([]string{a, b}); err == nil || !strings.Contains(err.Error(), "never ran") {
		t.Errorf("a success without an effect: %v, want a violation", err)
	}
	l.Record(a)
	if err := l.Check(nil); err == nil || !strings.Contains(err.Error(), "ran 2 times") {
		t.Errorf("two effects: %v, want a violation", err)
	}
	if !l.RecordFenced(c, 5) || l.RecordFenced(c, 4) || !l.RecordFenced(c, 5) {
		t.Errorf("RecordFenced must accept fences 5, refuse 4 (stale), accept 5")
	}
	if l.Rejected() != 1 || l.Count(c) != 2 || l.Total() != 4 || l.Pairs() != 2 {
		t.Errorf("rejected %d, count(c) %d, total %d, pairs %d; want 1, 2, 4, 2", l.Rejected(), l.Count(c), l.Total(), l.Pairs())
	}
	if Pair("a b", "c") == Pair("a", "b c") {
		t.Errorf("Pair is not injective")
	}
}

// echoServer accepts connections, echoes what they send and reports each
// chunk it received on the returned channel.
func echoServer(t *testing.T) (addr string, received <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 64)
				for {
					n, err := c.Read(buf)
					if n > 0 {
						got <- string(buf[:n])
						c.Write(buf[:n])
					}
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String(), got
}

func readWithin(c net.Conn, d time.Duration) (string, error) {
	_ = c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	return string(buf[:n]), err
}

// TestProxyModes checks each Mode against an echo server. The waits are
// real network timeouts: the proxy works on real sockets.
func TestProxyModes(t *testing.T) {
	target, received := echoServer(t)
	p, err := NewProxy(target)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	io.WriteString(c, "one")
	if got, err := readWithin(c, 5*time.Second); got != "one" || err != nil {
		t.Fatalf("pass: echo %q, %v", got, err)
	}
	<-received

	p.Set(Stall)
	io.WriteString(c, "two")
	if got, err := readWithin(c, 200*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("stall: read %q, %v; want nothing", got, err)
	}
	p.Set(Pass)
	if got, err := readWithin(c, 5*time.Second); got != "two" || err != nil {
		t.Fatalf("after the stall: echo %q, %v; want the held bytes", got, err)
	}
	<-received

	p.Set(DropReplies)
	io.WriteString(c, "three")
	if got := <-received; got != "three" {
		t.Fatalf("drop replies: the server got %q", got)
	}
	if got, err := readWithin(c, 200*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("drop replies: read %q, %v; want nothing", got, err)
	}

	p.Set(Cut)
	if _, err := readWithin(c, 5*time.Second); !errors.Is(err, io.EOF) {
		t.Fatalf("cut: read error %v, want EOF", err)
	}
	c2, err := net.Dial("tcp", p.Addr())
	if err == nil {
		_, err = readWithin(c2, 5*time.Second)
		c2.Close()
	}
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("cut: a new connection stayed open (%v)", err)
	}
	p.Set(Pass)
	c3, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	io.WriteString(c3, "four")
	if got, err := readWithin(c3, 5*time.Second); got != "four" || err != nil {
		t.Fatalf("healed: echo %q, %v", got, err)
	}
}
