package faulttest_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/prism-gateway/plugins/core/coretest"
	keyvaluev1 "github.com/prism-gateway/plugins/gen/prism/keyvalue/v1"
	"github.com/prism-gateway/plugins/internal/faulttest"
	"github.com/prism-gateway/plugins/internal/testsvc"
	"github.com/prism-gateway/plugins/postgres/postgreskv"
)

// startKV runs the postgres plugin in-process on databaseURL.
func startKV(t *testing.T, databaseURL string) (*coretest.Running, keyvaluev1.KeyValueServiceClient) {
	t.Helper()
	r := coretest.Start(t, postgreskv.New(), coretest.Options{
		YAML: controlPlaneYAML + "backend:\n  connect_timeout: 1s\n",
		Env:  map[string]string{"DATABASE_URL": databaseURL},
	})
	untilHealth(t, r.Conn, healthpb.HealthCheckResponse_SERVING, 30*time.Second)
	return r, keyvaluev1.NewKeyValueServiceClient(r.Conn)
}

// viaProxy is databaseURL with its host:port replaced by addr.
func viaProxy(t *testing.T, databaseURL, addr string) string {
	t.Helper()
	u, err := url.Parse(databaseURL)
	require.NoError(t, err)
	u.Host = addr
	return u.String()
}

// postgresHostPort is the shared test PostgreSQL's host:port, for a proxy in front of it.
func postgresHostPort(t *testing.T) string {
	t.Helper()
	u, err := url.Parse(testsvc.PostgresURL(t))
	require.NoError(t, err)
	return u.Host
}

func put(namespace, id, value string) *keyvaluev1.PutRequest {
	return &keyvaluev1.PutRequest{Namespace: namespace, Id: id,
		Items: []*keyvaluev1.PutItem{{Key: []byte("v"), Value: []byte(value)}}}
}

// getItem reads the one item "v" of a record; found is false when the record does not exist.
func getItem(ctx context.Context, kv keyvaluev1.KeyValueServiceClient, namespace, id string) (*keyvaluev1.Item, bool, error) {
	resp, err := kv.Get(ctx, &keyvaluev1.GetRequest{Namespace: namespace, Id: id, Keys: [][]byte{[]byte("v")}})
	if err != nil || !resp.GetFound() || len(resp.GetItems()) == 0 {
		return nil, false, err
	}
	return resp.GetItems()[0], true, nil
}

// A PostgreSQL crash (SIGKILL of every server process, fsync and synchronous_commit on) under
// concurrent Puts loses no acknowledged write, and the plugin serves again by itself.
func TestPostgresCrashUnderConcurrentPutsLosesNoAcknowledgedWrite(t *testing.T) {
	pg := faulttest.StartPostgres(t)
	_, kv := startKV(t, pg.URL)
	const ns, workers = "crash", 8

	var (
		mu                sync.Mutex
		acked             = map[string]string{}
		failed            atomic.Int64
		restartedAt       atomic.Int64
		firstAfterRestart atomic.Int64
		ackedAfterRestart atomic.Int64
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				id, value := fmt.Sprintf("w%d-%d", w, n), fmt.Sprintf("value-%d-%d", w, n)
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_, err := kv.Put(ctx, put(ns, id, value))
				cancel()
				if err != nil {
					failed.Add(1)
					time.Sleep(20 * time.Millisecond)
					continue
				}
				mu.Lock()
				acked[id] = value
				mu.Unlock()
				if at := restartedAt.Load(); at != 0 {
					ackedAfterRestart.Add(1)
					firstAfterRestart.CompareAndSwap(0, time.Now().UnixNano())
				}
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	mu.Lock()
	ackedBeforeCrash := len(acked)
	mu.Unlock()
	require.NoError(t, pg.Kill())
	killedAt := time.Now()
	time.Sleep(time.Second)
	require.NoError(t, pg.Start())
	restartedAt.Store(time.Now().UnixNano())
	require.Eventually(t, func() bool { return ackedAfterRestart.Load() >= 100 }, 30*time.Second, 50*time.Millisecond,
		"Puts succeed again after the restart")
	close(stop)
	wg.Wait()
	recovery := time.Duration(firstAfterRestart.Load() - restartedAt.Load())
	outage := time.Unix(0, firstAfterRestart.Load()).Sub(killedAt)

	lost := 0
	for id, value := range acked {
		item, found, err := getItem(t.Context(), kv, ns, id)
		require.NoError(t, err)
		if !found || string(item.GetValue()) != value {
			lost++
		}
	}
	faulttest.Report(t, "acked=%d (before crash %d) failed_unacked=%d lost=%d outage_seen=%.3fs recovery_after_restart=%.3fs",
		len(acked), ackedBeforeCrash, failed.Load(), lost, outage.Seconds(), recovery.Seconds())
	require.Positive(t, ackedBeforeCrash, "Puts were acknowledged before the crash")
	assert.Zero(t, lost, "acknowledged Puts lost in the crash")
}

// A compare-and-set counter survives a restart: each increment reads the version and writes
// with a version precondition and an idempotency token, and retries the same request while the
// outcome is unknown. The final counter equals the number of increments that succeeded: none
// lost, none applied twice.
func TestPostgresRestartKeepsACompareAndSetCounterExact(t *testing.T) {
	pg := faulttest.StartPostgres(t)
	_, kv := startKV(t, pg.URL)
	const ns, id, workers = "cas", "counter", 4
	_, err := kv.Put(t.Context(), &keyvaluev1.PutRequest{Namespace: ns, Id: id,
		Items:         []*keyvaluev1.PutItem{{Key: []byte("v"), Value: []byte("0")}},
		Preconditions: []*keyvaluev1.Precondition{{Key: []byte("v"), Condition: &keyvaluev1.Precondition_Absent{Absent: true}}}})
	require.NoError(t, err)

	var successes, conflicts, inDoubt atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for op := 0; ; op++ {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				item, found, err := getItem(ctx, kv, ns, id)
				cancel()
				if err != nil || !found {
					time.Sleep(20 * time.Millisecond)
					continue
				}
				n, _ := strconv.Atoi(string(item.GetValue()))
				req := &keyvaluev1.PutRequest{Namespace: ns, Id: id,
					Items: []*keyvaluev1.PutItem{{Key: []byte("v"), Value: []byte(strconv.Itoa(n + 1))}},
					Preconditions: []*keyvaluev1.Precondition{{Key: []byte("v"),
						Condition: &keyvaluev1.Precondition_Version{Version: item.GetVersion()}}},
					IdempotencyToken: fmt.Sprintf("cas-%d-%d", w, op)}
				// Retry the very same request until its outcome is known.
				for attempt := 0; ; attempt++ {
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					_, err := kv.Put(ctx, req)
					cancel()
					if err == nil {
						successes.Add(1)
						break
					}
					if status.Code(err) == codes.Aborted {
						conflicts.Add(1)
						break
					}
					inDoubt.Add(1)
					if attempt > 600 {
						t.Errorf("increment %s never resolved: %v", req.GetIdempotencyToken(), err)
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	beforeRestart := successes.Load()
	require.NoError(t, pg.Kill())
	time.Sleep(500 * time.Millisecond)
	require.NoError(t, pg.Start())
	require.Eventually(t, func() bool { return successes.Load() >= beforeRestart+50 }, 30*time.Second, 50*time.Millisecond,
		"increments succeed again after the restart")
	close(stop)
	wg.Wait()

	item, found, err := getItem(t.Context(), kv, ns, id)
	require.NoError(t, err)
	require.True(t, found)
	counter, _ := strconv.Atoi(string(item.GetValue()))
	faulttest.Report(t, "successful_cas=%d counter=%d conflicts=%d in_doubt_retries=%d lost=%d applied_twice=%d",
		successes.Load(), counter, conflicts.Load(), inDoubt.Load(),
		max(0, successes.Load()-int64(counter)), max(0, int64(counter)-successes.Load()))
	require.Positive(t, beforeRestart)
	assert.Equal(t, successes.Load(), int64(counter), "counter == number of successful compare-and-sets")
}

// Cutting connections (client to plugin and plugin to PostgreSQL) while Puts carry idempotency
// tokens: retrying each failed Put with its token until it succeeds writes every record exactly
// once; the version a record has afterwards is the one its successful response reported.
func TestIdempotentRetryAfterCutConnectionsWritesOnce(t *testing.T) {
	dbProxy := testsvc.NewProxy(t, postgresHostPort(t))
	r, _ := startKV(t, viaProxy(t, testsvc.PostgresURL(t), dbProxy.Addr()))
	clientProxy := testsvc.NewProxy(t, r.Addr)
	// Reconnect within ~100ms after each cut: grpc-go's default backoff grows to two minutes.
	conn, err := grpc.NewClient(clientProxy.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 10 * time.Millisecond, Multiplier: 1.6, MaxDelay: 100 * time.Millisecond},
			MinConnectTimeout: time.Second,
		}))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	kv := keyvaluev1.NewKeyValueServiceClient(conn)
	ns := fmt.Sprintf("cut%d", time.Now().UnixNano()%1_000_000)
	const workers, opsPerWorker = 4, 150

	stopCuts := make(chan struct{})
	var cuts atomic.Int64
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stopCuts:
				return
			case <-time.After(time.Duration(40+rand.IntN(80)) * time.Millisecond):
			}
			if i%2 == 0 {
				dbProxy.Cut()
			} else {
				clientProxy.Cut()
			}
			cuts.Add(1)
		}
	}()
	versions := make([][]int64, workers)
	var retries atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		versions[w] = make([]int64, opsPerWorker)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for op := range opsPerWorker {
				req := put(ns, fmt.Sprintf("w%d-%d", w, op), "once")
				req.IdempotencyToken = fmt.Sprintf("tok-%d-%d", w, op)
				for giveUp := time.Now().Add(30 * time.Second); ; {
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					resp, err := kv.Put(ctx, req)
					cancel()
					if err == nil {
						versions[w][op] = resp.GetVersions()[0].GetVersion()
						break
					}
					retries.Add(1)
					if time.Now().After(giveUp) {
						t.Errorf("put %s did not succeed in 30s of retries: %v", req.GetId(), err)
						return
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	close(stopCuts)

	check := keyvaluev1.NewKeyValueServiceClient(r.Conn)
	lost, twice := 0, 0
	for w := range workers {
		for op := range opsPerWorker {
			var item *keyvaluev1.Item
			var found bool
			require.Eventually(t, func() bool {
				var err error
				item, found, err = getItem(t.Context(), check, ns, fmt.Sprintf("w%d-%d", w, op))
				return err == nil
			}, 10*time.Second, 20*time.Millisecond)
			switch {
			case versions[w][op] == 0:
				continue // never acknowledged (reported above)
			case !found:
				lost++
			case item.GetVersion() != versions[w][op]:
				twice++
			}
		}
	}
	faulttest.Report(t, "puts=%d cuts=%d retries=%d lost=%d applied_twice=%d",
		workers*opsPerWorker, cuts.Load(), retries.Load(), lost, twice)
	require.Positive(t, retries.Load(), "the cuts made some calls fail, so retries were exercised")
	assert.Zero(t, lost)
	assert.Zero(t, twice)
}

// PostgreSQL hung (every byte held): KeyValue calls keep their deadline and health says
// NOT_SERVING in time.
func TestPostgresHangKeepsDeadlinesAndHealth(t *testing.T) {
	proxy := testsvc.NewProxy(t, postgresHostPort(t))
	r, kv := startKV(t, viaProxy(t, testsvc.PostgresURL(t), proxy.Addr()))
	checkHang(t, hangScenario{conn: r.Conn, freeze: proxy.Freeze, thaw: proxy.Thaw,
		call: func(ctx context.Context) error {
			_, err := kv.Put(ctx, put("hang", "record", "value"))
			return err
		}})
}

// A long PostgreSQL outage: the plugin's connection attempts (health checks plus pool dials) stay
// at a few per health interval however long the outage lasts — the same late in the outage as
// early, past the point where the old backoff overflowed into a tight loop — and it serves again
// by itself.
func TestLongPostgresOutageKeepsTheCheckRateBounded(t *testing.T) {
	proxy := testsvc.NewProxy(t, postgresHostPort(t))
	r := coretest.Start(t, postgreskv.New(), coretest.Options{
		YAML: "control_plane:\n  health_interval: 100ms\n  health_timeout: 500ms\nbackend:\n  connect_timeout: 1s\n",
		Env:  map[string]string{"DATABASE_URL": viaProxy(t, testsvc.PostgresURL(t), proxy.Addr())},
	})
	untilHealth(t, r.Conn, healthpb.HealthCheckResponse_SERVING, 30*time.Second)
	proxy.Down()
	untilHealth(t, r.Conn, healthpb.HealthCheckResponse_NOT_SERVING, 10*time.Second)
	const window = 3 * time.Second
	dialRate := func() float64 {
		before := proxy.Accepted()
		time.Sleep(window)
		return float64(proxy.Accepted()-before) / window.Seconds()
	}
	time.Sleep(time.Second)
	early := dialRate()
	// The old doubling overflowed after ~37 failed checks, i.e. ~4 s at 100ms.
	time.Sleep(2 * time.Second)
	late := dialRate()
	proxy.Up()
	recovered := untilHealth(t, r.Conn, healthpb.HealthCheckResponse_SERVING, 30*time.Second)
	faulttest.Report(t, "outage=%s dials/s early=%.1f late=%.1f (health_interval 100ms; sslmode prefer dials twice) serving_again_after=%s",
		time.Second+2*window+2*time.Second, early, late, recovered.Round(time.Millisecond))
	assert.Positive(t, late, "the plugin keeps checking")
	assert.LessOrEqual(t, late, 1.5*early+2, "the dial rate grows during the outage")
	// A few dials per interval (health check, pool, TLS fallback), never the thousands per
	// second of a tight loop.
	assert.LessOrEqual(t, late, 40.0, "connection attempts per second late in the outage")
}
