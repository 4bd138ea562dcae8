package kafkastream_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/prism-gateway/plugins/core/coretest"
	streamv1 "github.com/prism-gateway/plugins/gen/prism/stream/v1"
	"github.com/prism-gateway/plugins/internal/testsvc"
	"github.com/prism-gateway/plugins/kafka/kafkastream"
)

// publishInFlight reads the server's in-flight gauge for Publish from /metrics.
func publishInFlight(t *testing.T, r *coretest.Running) string {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, r.MetricsURL+"/metrics", nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^prism_grpc_server_in_flight\{[^}]*method="Publish"[^}]*\} (\S+)$`).FindStringSubmatch(string(body))
	if m == nil {
		return "0"
	}
	return m[1]
}

// With the brokers hanging (every byte held, connections open), Publish returns at the caller's
// deadline instead of waiting for the producer's timeouts, no handler stays behind, and once the
// health check sees the brokers gone a Publish fails fast with UNAVAILABLE.
func TestPublishReturnsAtItsDeadlineWhileTheBrokersHang(t *testing.T) {
	proxy := testsvc.NewProxy(t, testsvc.KafkaBrokers(t)[0])
	p := kafkastream.New()
	var d net.Dialer
	p.SetDialer(func(ctx context.Context, network, _ string) (net.Conn, error) {
		return d.DialContext(ctx, network, proxy.Addr())
	})
	r := coretest.Start(t, p, coretest.Options{
		YAML: "control_plane:\n  health_interval: 200ms\n  health_timeout: 500ms\nbackend:\n  brokers: [" +
			strings.Join(testsvc.KafkaBrokers(t), ", ") + "]\n" + groupTimings,
	})
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 15*time.Second)
	adm, _ := admin(t)
	topic := newTopic(t, adm, 1)
	c := client(r)
	rec := []*streamv1.Record{{Key: []byte("k"), Value: []byte("v")}}
	_, err := c.Publish(t.Context(), &streamv1.PublishRequest{Topic: topic, Records: rec})
	require.NoError(t, err, "the brokers answer before the freeze")

	proxy.Freeze()
	const deadline = 300 * time.Millisecond
	const calls = 20
	var wg sync.WaitGroup
	overshoot := make([]time.Duration, calls)
	codesSeen := make([]codes.Code, calls)
	for i := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			start := time.Now()
			_, err := c.Publish(ctx, &streamv1.PublishRequest{Topic: topic, Records: rec})
			overshoot[i] = time.Since(start) - deadline
			codesSeen[i] = status.Code(err)
		}()
	}
	wg.Wait()
	worst := time.Duration(0)
	for i := range calls {
		worst = max(worst, overshoot[i])
		assert.Contains(t, []codes.Code{codes.DeadlineExceeded, codes.Unavailable}, codesSeen[i], "call %d", i)
	}
	t.Logf("%d publishes against hanging brokers: worst return %s after the %s deadline", calls, worst.Round(time.Millisecond), deadline)
	assert.LessOrEqual(t, worst, 100*time.Millisecond, "each call returns within its deadline + 100 ms")
	require.Eventually(t, func() bool { return publishInFlight(t, r) == "0" }, time.Second, 20*time.Millisecond,
		"no Publish handler stays behind its caller")

	r.WaitHealth(t, "", healthpb.HealthCheckResponse_NOT_SERVING, 5*time.Second)
	start := time.Now()
	_, err = c.Publish(t.Context(), &streamv1.PublishRequest{Topic: topic, Records: rec})
	failFast := time.Since(start)
	require.Equal(t, codes.Unavailable, status.Code(err), "%v", err)
	assert.Contains(t, err.Error(), "unreachable")
	assert.Less(t, failFast, time.Second, "NOT_SERVING fails a Publish fast, without a client deadline")
	t.Logf("publish while NOT_SERVING failed in %s", failFast.Round(time.Millisecond))

	stream, err := c.PublishStream(t.Context())
	require.NoError(t, err)
	require.NoError(t, stream.Send(&streamv1.PublishRequest{Topic: topic, Records: rec, Sequence: 1}))
	_, err = stream.Recv()
	require.Equal(t, codes.Unavailable, status.Code(err), "PublishStream too: %v", err)

	proxy.Thaw()
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 30*time.Second)
	_, err = c.Publish(t.Context(), &streamv1.PublishRequest{Topic: topic, Records: rec})
	require.NoError(t, err, "publishing works again once the brokers answer")
}
