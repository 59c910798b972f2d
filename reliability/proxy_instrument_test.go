package reliability

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Mode is what a Proxy does with its connections.
type Mode int

const (
	// Pass forwards bytes both ways: a healthy network.
	Pass Mode = iota
	// Cut closes every connection and closes each new one as soon as it is
	// accepted: the store has gone away.
	Cut
	// Stall keeps connections open but holds their bytes, both ways, until
	// the mode changes (then they flow again, late): a store or network that
	// hangs. New connections are accepted and stall too: they reach the
	// server only when the stall ends, and not at all if their client has
	// gone by then.
	Stall
	// DropReplies forwards what clients send but throws away what the
	// server answers: requests are executed, their replies lost.
	DropReplies
)

// String returns the mode's name: "pass", "cut", "stall" or "drop-replies".
func (m Mode) String() string {
	switch m {
	case Pass:
		return "pass"
	case Cut:
		return "cut"
	case Stall:
		return "stall"
	case DropReplies:
		return "drop-replies"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// dialTimeout bounds the proxy's connection to its target.
const dialTimeout = 2 * time.Second

// Proxy is a TCP proxy between clients and one server whose behaviour a
// test switches at run time (see Mode), to take a store away mid-run and
// bring it back. It listens on a loopback port of its own; point the
// store's client at Addr. Its zero value is not usable; call NewProxy, and
// Close when done.
type Proxy struct {
	target string
	ln     net.Listener
	wg     sync.WaitGroup // the accept loop and every pump

	mu      sync.Mutex
	mode    Mode
	changed chan struct{} // closed and replaced at every mode change
	links   map[*link]struct{}
	closed  bool
}

// link is one proxied connection: the client's and the server's end.
type link struct {
	client, server net.Conn
	once           sync.Once
	done           chan struct{} // closed when the link is closed
}

func (l *link) close() {
	l.once.Do(func() {
		close(l.done)
		l.client.Close()
		l.server.Close()
	})
}

// NewProxy starts a proxy to target (host:port) in mode Pass, listening on
// 127.0.0.1 on a port of its own.
func NewProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	p := &Proxy{target: target, ln: ln, changed: make(chan struct{}), links: make(map[*link]struct{})}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the address (host:port) clients dial instead of the target's.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Mode returns the current mode.
func (p *Proxy) Mode() Mode {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode
}

// Set switches the proxy to m. Switching to Cut closes every open
// connection before Set returns; switching away from Stall lets the held
// bytes go.
func (p *Proxy) Set(m Mode) {
	p.mu.Lock()
	p.mode = m
	close(p.changed)
	p.changed = make(chan struct{})
	var doomed []*link
	if m == Cut {
		for l := range p.links {
			doomed = append(doomed, l)
		}
	}
	p.mu.Unlock()
	for _, l := range doomed {
		l.close()
	}
}

// Close stops the proxy: it stops listening, closes every connection and
// waits for its goroutines to end.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()
	err := p.ln.Close()
	for _, l := range links {
		l.close()
	}
	p.wg.Wait()
	return err
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // a transient accept error; keep serving
		}
		if p.Mode() == Cut {
			c.Close()
			continue
		}
		p.wg.Add(1)
		go p.connect(c)
	}
}

// connect links the accepted client connection c to the server. While the
// proxy stalls, it waits, as a connection through a hung network never
// reaches the server: the server sees no connection attempt (a PostgreSQL
// would start a backend for each, and a client pool retrying every few
// milliseconds would exhaust it). A client that gave up meanwhile is
// dropped without ever reaching the server.
func (p *Proxy) connect(c net.Conn) {
	defer p.wg.Done()
	var early []byte // what the client sent while it waited
	for {
		p.mu.Lock()
		m, changed, closed := p.mode, p.changed, p.closed
		p.mu.Unlock()
		if closed || m == Cut {
			c.Close()
			return
		}
		if m != Stall {
			break
		}
		<-changed
		var alive bool
		if early, alive = stillThere(c, early); !alive {
			c.Close()
			return
		}
	}
	s, err := net.DialTimeout("tcp", p.target, dialTimeout)
	if err != nil {
		c.Close()
		return
	}
	if len(early) > 0 {
		if _, err := s.Write(early); err != nil {
			c.Close()
			s.Close()
			return
		}
	}
	l := &link{client: c, server: s, done: make(chan struct{})}
	p.mu.Lock()
	if p.closed || p.mode == Cut {
		p.mu.Unlock()
		l.close()
		return
	}
	p.links[l] = struct{}{}
	p.wg.Add(2)
	p.mu.Unlock()
	go p.pump(l, l.server, l.client, false)
	go p.pump(l, l.client, l.server, true)
}

// stillThere reports whether the client of c is still connected, reading
// (and returning, after early) what it has sent so far.
func stillThere(c net.Conn, early []byte) ([]byte, bool) {
	buf := make([]byte, 4<<10)
	for {
		_ = c.SetReadDeadline(time.Now().Add(time.Millisecond))
		n, err := c.Read(buf)
		early = append(early, buf[:n]...)
		if err != nil {
			_ = c.SetReadDeadline(time.Time{})
			var ne net.Error
			return early, errors.As(err, &ne) && ne.Timeout()
		}
	}
}

// pump copies src to dst as the mode allows; reply is set for the
// server-to-client direction.
func (p *Proxy) pump(l *link, dst, src net.Conn, reply bool) {
	defer p.wg.Done()
	defer p.forget(l)
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !p.forward(l, dst, buf[:n], reply) {
			return
		}
		if err != nil {
			return
		}
	}
}

// forward writes b to dst once the mode lets it, and reports whether the
// link is still up.
func (p *Proxy) forward(l *link, dst net.Conn, b []byte, reply bool) bool {
	for {
		p.mu.Lock()
		m, changed := p.mode, p.changed
		p.mu.Unlock()
		switch m {
		case Pass:
			_, err := dst.Write(b)
			return err == nil
		case DropReplies:
			if reply {
				return true
			}
			_, err := dst.Write(b)
			return err == nil
		case Stall:
			select {
			case <-changed:
			case <-l.done:
				return false
			}
		default: // Cut
			return false
		}
	}
}

// forget closes l and drops it from the proxy's set.
func (p *Proxy) forget(l *link) {
	l.close()
	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
}
