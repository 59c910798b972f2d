package main

import (
	"errors"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"
)

// proxyMode is what a faultProxy does with its connections.
type proxyMode int

const (
	pass  proxyMode = iota // forward both ways
	cut                    // close every connection, and each new one at once: the store is gone
	stall                  // accept and hold, forwarding nothing either way: the store hangs
)

// faultProxy is a TCP proxy between idemd and a store that a test cuts or
// stalls at run time. (The reliability module has a fuller one; cmd cannot
// import it.)
type faultProxy struct {
	target string
	ln     net.Listener
	wg     sync.WaitGroup

	mu      sync.Mutex
	mode    proxyMode
	changed chan struct{} // closed and replaced at every change
	conns   map[net.Conn]struct{}
	closed  bool
}

// newFaultProxy starts a proxy to target (host:port), passing, and closes
// it when t ends.
func newFaultProxy(t *testing.T, target string) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{target: target, ln: ln, changed: make(chan struct{}), conns: make(map[net.Conn]struct{})}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

// through returns rawURL with its host replaced by the proxy's.
func (p *faultProxy) through(t *testing.T, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = p.ln.Addr().String()
	return u.String()
}

// urlHost returns the host:port of rawURL.
func urlHost(t *testing.T, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// set switches the proxy to m. Cutting closes every connection before set
// returns; ending a stall lets held bytes go, and closes the connections
// accepted during it (they never reached the store).
func (p *faultProxy) set(m proxyMode) {
	p.mu.Lock()
	p.mode = m
	close(p.changed)
	p.changed = make(chan struct{})
	var doomed []net.Conn
	if m == cut {
		for c := range p.conns {
			doomed = append(doomed, c)
		}
	}
	p.mu.Unlock()
	for _, c := range doomed {
		c.Close()
	}
}

func (p *faultProxy) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.ln.Close()
	p.set(cut)
	p.wg.Wait()
}

// track adds c to the connections that cutting closes; false if the proxy
// is cut or closed, c closed.
func (p *faultProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.mode == cut {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *faultProxy) untrack(c net.Conn) {
	c.Close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

func (p *faultProxy) state() (proxyMode, chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode, p.changed
}

func (p *faultProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if !p.track(c) {
			continue
		}
		p.wg.Go(func() { p.connect(c) })
	}
}

// connect links client connection c to the target; while the proxy
// stalls, it holds c without dialing (the store never sees it).
func (p *faultProxy) connect(c net.Conn) {
	if m, changed := p.state(); m == stall {
		<-changed
		p.untrack(c)
		return
	}
	s, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil || !p.track(s) {
		if s != nil {
			s.Close()
		}
		p.untrack(c)
		return
	}
	p.wg.Go(func() { p.pump(c, s) })
	p.wg.Go(func() { p.pump(s, c) })
}

// pump copies src to dst as the mode allows, then closes both.
func (p *faultProxy) pump(dst, src net.Conn) {
	defer p.untrack(src)
	defer p.untrack(dst)
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.forward(dst, buf[:n]) {
			return
		}
		if err != nil {
			return
		}
	}
}

func (p *faultProxy) forward(dst net.Conn, b []byte) bool {
	for {
		m, changed := p.state()
		switch m {
		case pass:
			_, err := dst.Write(b)
			return err == nil
		case stall:
			<-changed
		default:
			return false
		}
	}
}
