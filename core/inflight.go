package core

import (
	"context"
	"sync/atomic"
	"time"
)

// inflight counts data calls in progress so a drain can wait for them. The hot path is one
// atomic add; only a drain waits, so it polls rather than making every call signal.
type inflight struct {
	n atomic.Int64
}

func (f *inflight) add()         { f.n.Add(1) }
func (f *inflight) done()        { f.n.Add(-1) }
func (f *inflight) count() int64 { return f.n.Load() }

// drainPoll is how often a drain re-reads the count; it bounds how late a drain notices the
// last call finishing.
const drainPoll = 5 * time.Millisecond

// wait blocks until no call is in flight or ctx ends, and returns how many are still running.
func (f *inflight) wait(ctx context.Context) int64 {
	ticker := time.NewTicker(drainPoll)
	defer ticker.Stop()
	for {
		if n := f.count(); n == 0 {
			return 0
		}
		select {
		case <-ticker.C:
		case <-ctx.Done():
			return f.count()
		}
	}
}
