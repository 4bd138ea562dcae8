package rediscache

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/prism-gateway/plugins/core/apierr"
	"github.com/prism-gateway/plugins/core/credentials"
	"github.com/prism-gateway/plugins/internal/testsvc"
)

// Many goroutines share batches: every value comes back to the caller that wrote it, with its own
// TTL, conditions answer per call, and the batches really carried several calls each.
func TestPipelinedCallsKeepTheirOwnResultsUnderConcurrency(t *testing.T) {
	for _, mode := range []struct {
		name    string
		cluster bool
	}{{"single redis", false}, {"redis cluster", true}} {
		t.Run(mode.name, func(t *testing.T) {
			st := newTestStore(t, mode.cluster, true)
			require.NotNil(t, st.pipe)
			prefix := testKey(t, st, "conc")
			const workers, rounds = 64, 40
			var wg sync.WaitGroup
			errs := make(chan error, workers)
			for w := range workers {
				wg.Go(func() {
					errs <- pipelinedRounds(t.Context(), st, prefix+":"+strconv.Itoa(w), w, rounds)
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				require.NoError(t, err)
			}
			keys := make([]string, workers)
			for w := range keys {
				keys[w] = prefix + ":" + strconv.Itoa(w)
			}
			_, err := st.delete(context.Background(), keys)
			require.NoError(t, err)
			batches, calls, direct := st.pipe.stats.batches.Load(), st.pipe.stats.calls.Load(), st.pipe.stats.direct.Load()
			t.Logf("%d calls in %d batches (%.1f calls per batch), %d Gets sent alone", calls, batches, float64(calls)/float64(batches), direct)
			assert.Equal(t, int64(workers*rounds*5), calls+direct, "every call went through the pipeliner")
			assert.Less(t, batches, calls, "concurrent calls shared batches")
		})
	}
}

// pipelinedRounds writes, reads and conditionally writes one key of its own, checking each answer.
func pipelinedRounds(ctx context.Context, st *store, key string, worker, rounds int) error {
	for r := range rounds {
		value := fmt.Appendf(nil, "worker %d round %d", worker, r)
		ttl := time.Duration(worker+1) * time.Minute
		if _, err := st.set(ctx, key, value, ttl, false, always); err != nil {
			return err
		}
		got, err := st.get(ctx, key)
		if err != nil {
			return err
		}
		if !got.found || string(got.value) != string(value) {
			return fmt.Errorf("%s: read %q (found %t), wrote %q", key, got.value, got.found, value)
		}
		if got.ttl <= ttl-10*time.Second || got.ttl > ttl {
			return fmt.Errorf("%s: ttl %s, wrote %s", key, got.ttl, ttl)
		}
		if stored, err := st.set(ctx, key, []byte("other"), 0, true, ifAbsent); err != nil || stored {
			return fmt.Errorf("%s: set if absent of a present key: stored %t, %w", key, stored, err)
		}
		if stored, err := st.set(ctx, key, value, 0, true, ifPresent); err != nil || !stored {
			return fmt.Errorf("%s: set if present of a present key: stored %t, %w", key, stored, err)
		}
		if found, err := st.expire(ctx, key, ttl); err != nil || !found {
			return fmt.Errorf("%s: expire: found %t, %w", key, found, err)
		}
	}
	return nil
}

// A batch waits for the latest deadline among its callers; a caller with an earlier one must not
// wait with it. With the link to Redis frozen, a short-deadline Set that sits first in the queue
// and then on the wire, in a batch with a long-deadline Set, ends with DEADLINE_EXCEEDED at its
// own deadline; the long one succeeds once the link thaws.
func TestPipelinedCallEndsAtItsOwnDeadlineWhileItsBatchIsOnTheWire(t *testing.T) {
	proxy := testsvc.NewProxy(t, testsvc.RedisAddr(t))
	b := defaultBackend()
	b.Address, b.AutoPipeline = proxy.Addr(), true
	m, _ := newMetrics()
	st, err := newStore(b, m, credentials.NewStatic(credentials.Credentials{Username: testsvc.User, Password: testsvc.Password}))
	require.NoError(t, err)
	t.Cleanup(func() { _ = st.client.Close() })
	require.NoError(t, st.ping(t.Context()))
	key := fmt.Sprintf("prism:pipedeadline:%d", time.Now().UnixNano())
	t.Cleanup(func() { _ = st.client.Del(context.Background(), key, key+":short").Err() })

	type result struct {
		err     error
		elapsed time.Duration
	}
	set := func(key string, timeout time.Duration) <-chan result {
		done := make(chan result, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			start := time.Now()
			_, err := st.set(ctx, key, []byte("v"), time.Minute, false, always)
			done <- result{err, time.Since(start)}
		}()
		return done
	}
	q := st.pipe.retried
	queued := func(sending, pending int) func() bool {
		return func() bool {
			q.mu.Lock()
			defer q.mu.Unlock()
			return q.sending == sending && len(q.pending) == pending
		}
	}

	proxy.Freeze()
	// Two batches of one call each fill the wire and time out at 700 ms.
	first, second := set(key, 700*time.Millisecond), set(key, 700*time.Millisecond)
	require.Eventually(t, queued(maxBatchesInFlight, 0), time.Second, time.Millisecond)
	// These two wait in the queue, then leave together in the next batch, bounded by 10 s.
	short := set(key+":short", 1500*time.Millisecond)
	require.Eventually(t, queued(maxBatchesInFlight, 1), time.Second, time.Millisecond)
	long := set(key, 10*time.Second)
	require.Eventually(t, queued(maxBatchesInFlight, 2), time.Second, time.Millisecond)
	for _, c := range []<-chan result{first, second} {
		r := <-c
		assert.Equal(t, codes.DeadlineExceeded, apierr.Code(r.err), "%v", r.err)
	}
	require.Eventually(t, queued(1, 0), time.Second, time.Millisecond, "the waiting calls are on the wire in one batch")

	r := <-short
	t.Logf("short-deadline call in a frozen batch: %v after %s", r.err, r.elapsed)
	require.Error(t, r.err)
	assert.Equal(t, codes.DeadlineExceeded, apierr.Code(r.err), "%v", r.err)
	require.ErrorIs(t, r.err, context.DeadlineExceeded)
	assert.Less(t, r.elapsed, 2500*time.Millisecond, "the call ended at its own deadline, not its batch's")
	select {
	case r := <-long:
		t.Fatalf("the long-deadline call ended while the link was frozen: %v after %s", r.err, r.elapsed)
	default:
	}

	proxy.Thaw()
	r = <-long
	t.Logf("long-deadline call after the thaw: %v after %s", r.err, r.elapsed)
	require.NoError(t, r.err, "the batch kept its latest caller's deadline")
	// The short call's SET was on the wire: it ran, although its caller was told the deadline
	// passed (as for any call whose deadline passes after its command was sent).
	n, err := st.client.Exists(t.Context(), key+":short").Result()
	require.NoError(t, err)
	t.Logf("the short call's key exists after the thaw: %t", n == 1)
}
