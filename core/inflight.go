package core

import (
	"context"
	"sync"
)

// inflight counts data calls in progress so a drain can wait for them.
type inflight struct {
	mu   sync.Mutex
	n    int64
	zero chan struct{} // closed when n drops to zero
}

func (f *inflight) add() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.n == 0 {
		f.zero = make(chan struct{})
	}
	f.n++
}

func (f *inflight) done() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n--
	if f.n == 0 {
		close(f.zero)
	}
}

func (f *inflight) count() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

// wait blocks until no call is in flight or ctx ends, and returns how many are still running.
func (f *inflight) wait(ctx context.Context) int64 {
	for {
		f.mu.Lock()
		if f.n == 0 {
			f.mu.Unlock()
			return 0
		}
		zero := f.zero
		f.mu.Unlock()
		select {
		case <-zero:
		case <-ctx.Done():
			return f.count()
		}
	}
}
