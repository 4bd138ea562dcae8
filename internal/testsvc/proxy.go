package testsvc

import (
	"fmt"
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy forwards TCP connections to a real backend and injects faults between a plugin and it:
// take the backend away (Down), reset open connections (Cut), stop forwarding while keeping
// connections open (Freeze), or slow the link (SetRate). Other tests sharing the backend are not
// affected.
type Proxy struct {
	listener net.Listener
	target   string

	mu       sync.Mutex
	down     bool
	frozen   bool
	thawed   chan struct{} // closed when a freeze ends
	rate     int           // bytes per second per direction of a connection; 0 = unlimited
	conns    map[net.Conn]struct{}
	accepted int
	closing  bool
	done     chan struct{}
	wg       sync.WaitGroup
}

// NewProxy listens on a free loopback port and forwards to target until the test ends.
func NewProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	p, err := StartProxy(target)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	tb.Cleanup(p.Close)
	return p
}

// StartProxy is NewProxy for a proxy that outlives one test (shared by a package's tests);
// the caller must Close it.
func StartProxy(target string) (*Proxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("proxy listen: %w", err)
	}
	p := &Proxy{listener: l, target: target, conns: map[net.Conn]struct{}{}, done: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the address plugins should dial instead of the backend.
func (p *Proxy) Addr() string { return p.listener.Addr().String() }

// Down resets every open connection and refuses new ones, as if the backend died.
func (p *Proxy) Down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	p.resetLocked()
}

// Up lets connections through again.
func (p *Proxy) Up() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}

// Cut resets every open connection (TCP RST) but keeps accepting new ones, as a broken network
// path or a restarted load balancer does.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.resetLocked()
}

// Freeze stops forwarding bytes in both directions while keeping every connection open and
// accepting new ones, as a backend hung in SIGSTOP or a black-holed network looks to a client.
func (p *Proxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.frozen {
		p.frozen = true
		p.thawed = make(chan struct{})
	}
}

// Thaw ends a Freeze; held bytes are forwarded.
func (p *Proxy) Thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.frozen {
		p.frozen = false
		close(p.thawed)
	}
}

// SetRate limits each direction of each connection to bytesPerSecond (0 removes the limit), so a
// large upload stays in flight long enough for a test to act while it arrives.
func (p *Proxy) SetRate(bytesPerSecond int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rate = bytesPerSecond
}

// Accepted counts the connections the proxy accepted, including those refused while Down: the
// number of dials a plugin made to its backend.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// resetLocked closes every connection with SO_LINGER 0, so the peers see a reset, not a FIN.
func (p *Proxy) resetLocked() {
	for c := range p.conns {
		reset(c)
	}
}

func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.listener.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.accepted++
		if p.down || p.closing {
			p.mu.Unlock()
			reset(client)
			continue
		}
		p.mu.Unlock()
		backend, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			reset(client)
			continue
		}
		p.mu.Lock()
		if p.down || p.closing {
			p.mu.Unlock()
			reset(client)
			reset(backend)
			continue
		}
		p.conns[client], p.conns[backend] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(client, backend)
		go p.pipe(backend, client)
	}
}

// pipe copies src to dst chunk by chunk, holding each chunk while the proxy is frozen and pacing
// chunks to the rate limit.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	defer func() {
		_ = dst.Close()
		_ = src.Close()
		p.mu.Lock()
		delete(p.conns, dst)
		delete(p.conns, src)
		p.mu.Unlock()
	}()
	buf := make([]byte, 16<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.hold(n) {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// hold blocks while the proxy is frozen and for n bytes' share of the rate limit; it reports
// false when the proxy is closing.
func (p *Proxy) hold(n int) bool {
	for {
		p.mu.Lock()
		frozen, thawed, rate := p.frozen, p.thawed, p.rate
		p.mu.Unlock()
		if frozen {
			select {
			case <-thawed:
				continue
			case <-p.done:
				return false
			}
		}
		if rate > 0 {
			select {
			case <-time.After(time.Duration(n) * time.Second / time.Duration(rate)):
			case <-p.done:
				return false
			}
		}
		return true
	}
}

// Close resets every connection, stops listening and waits for the proxy's goroutines. Safe to
// call more than once.
func (p *Proxy) Close() {
	p.mu.Lock()
	if p.closing {
		p.mu.Unlock()
		return
	}
	p.closing = true
	close(p.done)
	p.resetLocked()
	p.mu.Unlock()
	_ = p.listener.Close()
	p.wg.Wait()
}
