package faulttest_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	keyvaluev1 "github.com/prism-gateway/plugins/gen/prism/keyvalue/v1"
	"github.com/prism-gateway/plugins/internal/binarytest"
	"github.com/prism-gateway/plugins/internal/faulttest"
	"github.com/prism-gateway/plugins/internal/testsvc"
)

// SIGTERM to the postgres plugin process under load, with large uploads still arriving (900 KiB
// Puts slowed to ~1.5 s each by a rate-limited link, next to 256 KiB Puts at full speed): every
// call that began before the signal completes, and the process exits 0 after the drain.
func TestSIGTERMUnderLoadCompletesEveryCallThatBegan(t *testing.T) {
	bin := binarytest.Build(t, "../../postgres") // compiled before any clock starts
	proc := binarytest.Start(t, bin, binarytest.BaseEnv(
		"DATABASE_URL="+testsvc.PostgresURL(t), "PRISM_CONTROL_PLANE_SHUTDOWN_GRACE=20s"))
	proc.WaitServing(t, 30*time.Second)
	slowLink := testsvc.NewProxy(t, proc.Addr())
	slowLink.SetRate(600 << 10)

	const slowWorkers, fastWorkers = 4, 4
	var (
		quiet                   atomic.Bool // set just before the signal: no call starts after it
		started, ok, failed     atomic.Int64
		inFlight, inFlightAtSig atomic.Int64
		firstErr                atomic.Value
	)
	run := func(kv keyvaluev1.KeyValueServiceClient, id string, size int) {
		for n := 0; !quiet.Load(); n++ {
			started.Add(1)
			inFlight.Add(1)
			_, err := kv.Put(context.Background(), &keyvaluev1.PutRequest{Namespace: "drain", Id: fmt.Sprintf("%s-%d", id, n),
				Items: []*keyvaluev1.PutItem{{Key: []byte("v"), Value: make([]byte, size)}}})
			inFlight.Add(-1)
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, status.Convert(err).String())
				continue
			}
			ok.Add(1)
		}
	}
	var wg sync.WaitGroup
	for w := range slowWorkers {
		conn, err := grpc.NewClient(slowLink.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		require.NoError(t, err)
		t.Cleanup(func() { _ = conn.Close() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			run(keyvaluev1.NewKeyValueServiceClient(conn), fmt.Sprintf("slow%d", w), 900<<10)
		}()
	}
	for w := range fastWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			run(keyvaluev1.NewKeyValueServiceClient(proc.Conn), fmt.Sprintf("fast%d", w), 256<<10)
		}()
	}
	// Let the slow uploads get well under way, then stop starting calls and signal.
	time.Sleep(2500 * time.Millisecond)
	quiet.Store(true)
	time.Sleep(20 * time.Millisecond)
	inFlightAtSig.Store(inFlight.Load())
	signalled := time.Now()
	proc.Signal(t, binarytest.SIGTERM)
	code := proc.Wait(t, 30*time.Second)
	drain := time.Since(signalled)
	wg.Wait()

	faulttest.Report(t, "calls=%d completed=%d failed=%d in_flight_at_sigterm=%d drain_and_exit=%.2fs exit=%d",
		started.Load(), ok.Load(), failed.Load(), inFlightAtSig.Load(), drain.Seconds(), code)
	require.Positive(t, inFlightAtSig.Load(), "uploads were in flight when the signal came")
	assert.Zero(t, failed.Load(), "calls that began before SIGTERM failed; first: %v", firstErr.Load())
	assert.Zero(t, code, "exit code after the drain\n%s", proc.Stderr())
}
