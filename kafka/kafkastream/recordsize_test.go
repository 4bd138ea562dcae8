package kafkastream_test

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/prism-gateway/plugins/core"
	"github.com/prism-gateway/plugins/core/config"
	pluginv1 "github.com/prism-gateway/plugins/gen/prism/plugin/v1"
	streamv1 "github.com/prism-gateway/plugins/gen/prism/stream/v1"
	"github.com/prism-gateway/plugins/internal/testsvc"
	"github.com/prism-gateway/plugins/kafka/kafkastream"
)

// The value limit the plugin advertises is reachable on a broker with default settings, and a
// record too large for one batch is the caller's INVALID_ARGUMENT, decided before Kafka.
func TestAdvertisedValueLimitFitsADefaultBroker(t *testing.T) {
	r := startPlugin(t, "")
	info, err := pluginv1.NewPluginServiceClient(r.Conn).GetInfo(t.Context(), &pluginv1.GetInfoRequest{})
	require.NoError(t, err)
	limit := info.GetCapabilities()["max_value_bytes"]
	require.Equal(t, "1000000", limit, "the default limit")

	adm, _ := admin(t)
	topic := newTopic(t, adm, 1)
	c := client(r)
	// Random bytes, so that compression cannot make the record smaller than it is.
	value := make([]byte, 1_000_000)
	_, _ = rand.Read(value)
	_, err = c.Publish(t.Context(), &streamv1.PublishRequest{Topic: topic, Records: []*streamv1.Record{
		{Key: []byte("k"), Value: value, Headers: []*streamv1.Header{{Key: "h", Value: []byte("x")}}},
	}})
	require.NoError(t, err, "a value of exactly limits.max_value_bytes publishes")

	_, err = c.Publish(t.Context(), &streamv1.PublishRequest{Topic: topic, Records: []*streamv1.Record{{Value: make([]byte, 1_000_001)}}})
	require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	assert.Contains(t, err.Error(), "records[0].value")

	// Key and value each within their limits, together too large for a batch.
	_, err = c.Publish(t.Context(), &streamv1.PublishRequest{Topic: topic, Records: []*streamv1.Record{
		{Value: make([]byte, 1_000_000)}, {Key: make([]byte, 60_000), Value: make([]byte, 1_000_000)},
	}})
	require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	assert.Contains(t, err.Error(), "records[1]")
	assert.Contains(t, err.Error(), "backend.batch_max_bytes")
}

func TestValueLimitThatCannotFitABatchIsRefusedAtStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "plugin.yaml")
	yaml := "backend:\n  brokers: [" + strings.Join(testsvc.KafkaBrokers(t), ", ") + "]\nlimits:\n  max_value_bytes: 1048576\n"
	require.NoError(t, os.WriteFile(path, []byte(yaml), 0o600))
	srv, err := core.New(t.Context(), kafkastream.New(), core.Options{
		Source:    config.Source{Path: path, Required: true, LookupEnv: func(string) (string, bool) { return "", false }},
		LogOutput: &bytes.Buffer{},
	})
	if srv != nil {
		_ = srv.Shutdown(t.Context())
	}
	require.Error(t, err)
	assert.Contains(t, err.Error(), "limits.max_value_bytes")
	assert.Contains(t, err.Error(), "backend.batch_max_bytes (1048576)")
}
