// Package retire closes backend clients that a reload or a credential rotation replaced. The
// plugin swaps the new client in first, so new calls never see the old one; calls that picked up
// the old client just before the swap get a grace period to finish on it before it is closed.
// Every plugin that replaces a client uses this one helper with the one default grace, so a
// replaced PostgreSQL pool and a replaced Redis client behave the same way.
package retire

import (
	"sync"
	"time"
)

// Grace is how long a replaced client stays open by default. It is longer than the calls
// the plugins serve take (their deadlines are bounded by the backend timeouts), and short enough
// that replaced connections do not linger for an operator watching the backend.
const Grace = 30 * time.Second

// Retirer closes replaced clients after their grace, or all at once on Close. The zero value is
// ready to use; its methods may be called from any goroutine.
type Retirer struct {
	mu      sync.Mutex
	stop    chan struct{}
	stopped bool
	waiting sync.WaitGroup
}

// Retire calls closeClient once grace has passed, or at Close if that comes first. After Close
// it closes the client at once (a late swap must not leak the client it replaced).
func (r *Retirer) Retire(grace time.Duration, closeClient func()) {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		closeClient()
		return
	}
	stop := r.stopChan()
	r.waiting.Add(1)
	r.mu.Unlock()
	go func() {
		defer r.waiting.Done()
		timer := time.NewTimer(grace)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-stop:
		}
		closeClient()
	}()
}

// Close closes every client still in its grace and returns once all of them are closed.
func (r *Retirer) Close() {
	r.mu.Lock()
	if !r.stopped {
		r.stopped = true
		close(r.stopChan())
	}
	r.mu.Unlock()
	r.waiting.Wait()
}

// stopChan returns the channel Close closes, making it on first use; r.mu is held.
func (r *Retirer) stopChan() chan struct{} {
	if r.stop == nil {
		r.stop = make(chan struct{})
	}
	return r.stop
}
