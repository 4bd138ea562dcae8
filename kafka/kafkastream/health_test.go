package kafkastream_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prism-gateway/plugins/conformance/healthtest"
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

// Brokers advertise their own addresses, so a proxy in the seed list alone would be bypassed;
// every connection of the plugin's client is dialled to the suite's address instead.
func TestHealth(t *testing.T) {
	healthtest.Run(t, healthtest.Harness{
		Service: streamService, Backend: testsvc.KafkaSASLBrokers(t)[0], Password: testsvc.Password,
		Start: func(t *testing.T, addr, password, yaml string) *coretest.Running {
			t.Helper()
			p := kafkastream.New()
			var d net.Dialer
			p.SetDialer(func(ctx context.Context, network, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, addr)
			})
			return coretest.Start(t, p, coretest.Options{YAML: yaml, Env: scramEnv(t, password)})
		},
		RefusedLog: "SASL_AUTHENTICATION_FAILED",
		Patience:   15 * time.Second,
	})
}
