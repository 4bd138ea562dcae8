// Package credtest holds what the plugins' credential tests share: clients of the test OpenBao,
// a steady call load that records every failure, GetInfo and metrics readers, and the scan of
// every log line for every secret a test handed out or saw issued.
package credtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	vault "github.com/hashicorp/vault/api"
	"github.com/stretchr/testify/require"

	"github.com/prism-gateway/plugins/core/coretest"
	pluginv1 "github.com/prism-gateway/plugins/gen/prism/plugin/v1"
	"github.com/prism-gateway/plugins/internal/testsvc"
)

// RandomSuffix is 10 random hex characters, for names a test creates.
func RandomSuffix(tb testing.TB) string {
	tb.Helper()
	var b [5]byte
	_, err := rand.Read(b[:])
	require.NoError(tb, err)
	return hex.EncodeToString(b[:])
}

// VaultAdmin is a root client on the shared test OpenBao, for test setup.
func VaultAdmin(tb testing.TB) *vault.Client {
	tb.Helper()
	return VaultClient(tb, testsvc.VaultAddr(tb), testsvc.VaultToken())
}

// VaultClient is a client of the OpenBao at addr with token, without retries.
func VaultClient(tb testing.TB, addr, token string) *vault.Client {
	tb.Helper()
	cfg := vault.DefaultConfig()
	cfg.Address = addr
	cfg.MaxRetries = 0
	c, err := vault.NewClient(cfg)
	require.NoError(tb, err)
	c.SetToken(token)
	return c
}

// PluginToken is a token with the plugins' policy, revoked when the test ends, which also
// revokes the leases the plugin took with it (and so drops the backend users they created).
func PluginToken(tb testing.TB, admin *vault.Client) string {
	tb.Helper()
	s, err := admin.Auth().Token().CreateWithContext(tb.Context(), &vault.TokenCreateRequest{
		Policies: []string{"prism-plugins"}, TTL: "10m",
	})
	require.NoError(tb, err)
	token := s.Auth.ClientToken
	tb.Cleanup(func() { _ = admin.Auth().Token().RevokeTreeWithContext(context.Background(), token) })
	return token
}

// Capabilities is the plugin's GetInfo capabilities.
func Capabilities(tb testing.TB, r *coretest.Running) map[string]string {
	tb.Helper()
	info, err := pluginv1.NewPluginServiceClient(r.Conn).GetInfo(tb.Context(), &pluginv1.GetInfoRequest{})
	require.NoError(tb, err)
	return info.GetCapabilities()
}

// MetricsText is the plugin's metrics in the text exposition format.
func MetricsText(tb testing.TB, r *coretest.Running) string {
	tb.Helper()
	m, err := pluginv1.NewPluginServiceClient(r.Conn).GetMetrics(tb.Context(), &pluginv1.GetMetricsRequest{})
	require.NoError(tb, err)
	return m.GetText()
}

// MetricValue reads one sample (name with labels, exactly as exposed) from the text exposition.
func MetricValue(text, sample string) float64 {
	for _, line := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// AssertNoSecrets scans every log line for every secret; an empty secret is skipped.
func AssertNoSecrets(tb testing.TB, logs string, secrets ...string) {
	tb.Helper()
	lines := strings.Split(strings.TrimSpace(logs), "\n")
	checked := 0
	for _, s := range secrets {
		if s == "" {
			continue
		}
		checked++
		for i, line := range lines {
			if strings.Contains(line, s) {
				tb.Errorf("log line %d holds a secret (%d characters): %s", i+1, len(s), strings.ReplaceAll(line, s, "<SECRET>"))
			}
		}
	}
	tb.Logf("log scan: %d lines, %d secrets, none found", len(lines), checked)
}

// Load keeps a steady stream of calls going and records every failure with the time its call
// started.
type Load struct {
	calls    atomic.Int64
	stop     chan struct{}
	wg       sync.WaitGroup
	mu       sync.Mutex
	failures []Failure
}

// Failure is one failed call.
type Failure struct {
	Started time.Time
	Err     error
}

// StartLoad runs workers goroutines that each call call(ctx, worker, i) for i = 0, 1, … with a
// 2ms pause between calls and a 10s deadline per call, until Finish or the end of the test.
func StartLoad(tb testing.TB, workers int, call func(ctx context.Context, worker, i int) error) *Load {
	tb.Helper()
	l := &Load{stop: make(chan struct{})}
	for w := range workers {
		l.wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				case <-time.After(2 * time.Millisecond):
				}
				started := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				l.calls.Add(1)
				if err := call(ctx, w, i); err != nil {
					l.mu.Lock()
					l.failures = append(l.failures, Failure{Started: started, Err: err})
					l.mu.Unlock()
				}
				cancel()
			}
		})
	}
	tb.Cleanup(l.halt)
	return l
}

func (l *Load) halt() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// Finish stops the load and returns the call count and the failures.
func (l *Load) Finish() (int64, []Failure) {
	l.halt()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.calls.Load(), l.failures
}
