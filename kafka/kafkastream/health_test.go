package kafkastream_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/prism-gateway/plugins/core/coretest"
	"github.com/prism-gateway/plugins/internal/testsvc"
	"github.com/prism-gateway/plugins/kafka/kafkastream"
)

const streamService = "prism.stream.v1.StreamService"

func scramEnv(t *testing.T, password string) map[string]string {
	t.Helper()
	return map[string]string{
		"KAFKA_BROKERS":       strings.Join(testsvc.KafkaSASLBrokers(t), ","),
		"KAFKA_SASL_USERNAME": testsvc.User,
		"KAFKA_SASL_PASSWORD": password,
	}
}

func TestHealthServesOnceAuthenticatedWithSCRAM(t *testing.T) {
	r := coretest.Start(t, kafkastream.New(), coretest.Options{Env: scramEnv(t, testsvc.Password)})
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 15*time.Second)
	r.WaitHealth(t, streamService, healthpb.HealthCheckResponse_SERVING, time.Second)
}

func TestWrongSCRAMPasswordIsNotServingAndNeverLogged(t *testing.T) {
	const wrong = "definitely-not-the-password"
	r := coretest.Start(t, kafkastream.New(), coretest.Options{
		YAML: "control_plane:\n  health_interval: 200ms\n",
		Env:  scramEnv(t, wrong),
	})
	require.Eventually(t, func() bool { return r.Logs.Contains("SASL_AUTHENTICATION_FAILED") }, 15*time.Second, 50*time.Millisecond,
		"the log says why the backend is unusable")
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_NOT_SERVING, time.Second)
	assert.NotContains(t, r.Logs.String(), wrong)
}

// Brokers advertise their own addresses, so a proxy in the seed list alone would be bypassed;
// every connection of the plugin's client is dialled through it instead.
func TestHealthFollowsABrokerOutageWithoutRestart(t *testing.T) {
	proxy := testsvc.NewProxy(t, testsvc.KafkaSASLBrokers(t)[0])
	p := kafkastream.New()
	var d net.Dialer
	p.SetDialer(func(ctx context.Context, network, _ string) (net.Conn, error) {
		return d.DialContext(ctx, network, proxy.Addr())
	})
	r := coretest.Start(t, p, coretest.Options{
		YAML: "control_plane:\n  health_interval: 200ms\n  health_timeout: 1s\n",
		Env:  scramEnv(t, testsvc.Password),
	})
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 15*time.Second)

	proxy.Down()
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_NOT_SERVING, 15*time.Second)
	r.WaitHealth(t, streamService, healthpb.HealthCheckResponse_NOT_SERVING, time.Second)

	proxy.Up()
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 20*time.Second)
	r.WaitHealth(t, streamService, healthpb.HealthCheckResponse_SERVING, time.Second)
}
