package benchkit

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"time"
)

// OpenWorkers is how many calls OpenLoop keeps in flight at most; a call scheduled while all
// are busy waits for one, and that wait counts in its latency.
const OpenWorkers = 256

// OpenLoop calls op at a fixed arrival rate (calls per second) for d, or for exactly calls
// calls when calls > 0, whatever the answers' speed: call k is due at start + k/rate and its
// latency is measured from that due time, so time spent queued behind slow calls (in the
// server or waiting for a free worker) shows, which a closed loop hides. Errors stop nothing
// until the end; OpenLoop returns them joined (at most one per worker).
func OpenLoop(ctx context.Context, op Op, rate float64, d time.Duration, calls int) (Sample, error) {
	if rate <= 0 {
		return Sample{}, errors.New("open loop: rate must be positive")
	}
	interval := time.Duration(float64(time.Second) / rate)
	n := calls
	if n <= 0 {
		n = max(int(d/interval), 1)
	}
	type job struct {
		i   int
		due time.Time
	}
	jobs := make(chan job, OpenWorkers)
	errs := make([]error, OpenWorkers)
	lat := make([][]time.Duration, OpenWorkers)
	lag := make([][]time.Duration, OpenWorkers)
	var wg sync.WaitGroup
	for w := range OpenWorkers {
		wg.Go(func() {
			for j := range jobs {
				lag[w] = append(lag[w], time.Since(j.due))
				if err := op(ctx, j.i); err != nil {
					if errs[w] == nil {
						errs[w] = err
					}
					continue
				}
				lat[w] = append(lat[w], time.Since(j.due))
			}
		})
	}
	start := time.Now()
	func() {
		// Go's timers wake about a millisecond late on this kind of VM, which would count as
		// latency; a locked thread with no timer slack sleeps within tens of microseconds.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		preciseSleepInit()
		for k := range n {
			due := start.Add(time.Duration(k) * interval)
			if wait := time.Until(due); wait > 0 {
				preciseSleep(wait)
			}
			select {
			case jobs <- job{i: k, due: due}:
			case <-ctx.Done():
				return
			}
		}
	}()
	close(jobs)
	wg.Wait()
	s := Sample{Elapsed: time.Since(start)}
	for w := range lat {
		s.Lat = append(s.Lat, lat[w]...)
		s.Lag = append(s.Lag, lag[w]...)
	}
	return s, errors.Join(append(errs, ctx.Err())...)
}
