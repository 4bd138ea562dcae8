package credentials

import (
	"context"
	"fmt"
	"sync"
)

// lifecycle is the background goroutine of a source that watches or renews: started once,
// stopped once, and waited for.
type lifecycle struct {
	mu      sync.Mutex
	cancel  context.CancelFunc
	done    chan struct{}
	stopped bool
}

// start runs first and, if it succeeds, loop in a goroutine whose context ends with stop; first
// runs under the lock, so two Starts never both run it. A second start is a no-op and a start
// after stop an error. The goroutine outlives ctx's cancellation: only stop ends it.
func (l *lifecycle) start(ctx context.Context, what string, first func() error, loop func(context.Context)) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return fmt.Errorf("%s: start after stop", what)
	}
	if l.cancel != nil {
		return nil
	}
	if err := first(); err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	l.cancel, l.done = cancel, done
	go func() {
		defer close(done)
		loop(runCtx)
	}()
	return nil
}

// stop ends the goroutine and waits for it until ctx ends. Safe before start and twice.
func (l *lifecycle) stop(ctx context.Context, what string) error {
	l.mu.Lock()
	l.stopped = true
	cancel, done := l.cancel, l.done
	l.cancel = nil
	l.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stop %s: %w", what, ctx.Err())
	}
}
