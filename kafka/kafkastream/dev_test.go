package kafkastream_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/prism-gateway/plugins/conformance/streamtest"
	"github.com/prism-gateway/plugins/core/coretest"
	pluginv1 "github.com/prism-gateway/plugins/gen/prism/plugin/v1"
	streamv1 "github.com/prism-gateway/plugins/gen/prism/stream/v1"
	"github.com/prism-gateway/plugins/kafka/kafkastream"
)

// startDev runs the plugin in --dev mode on its embedded broker, with data under dir, and
// returns an admin client for that broker.
func startDev(t *testing.T, dir string) (*coretest.Running, *kadm.Client) {
	t.Helper()
	r := coretest.Start(t, kafkastream.New(), coretest.Options{YAML: "backend:\n" + groupTimings, DevMode: true, DevDataDir: dir})
	info, err := pluginv1.NewPluginServiceClient(r.Conn).GetInfo(t.Context(), &pluginv1.GetInfoRequest{})
	require.NoError(t, err)
	assert.True(t, info.GetDevMode())
	assert.Equal(t, "kfake (dev mode)", info.GetBackend())
	brokers := info.GetCapabilities()["dev_brokers"]
	require.NotEmpty(t, brokers, "GetInfo names the embedded brokers in dev mode")
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...))
	require.NoError(t, err)
	t.Cleanup(cl.Close)
	return r, kadm.NewClient(cl)
}

func TestConformanceDevMode(t *testing.T) {
	r, adm := startDev(t, t.TempDir())
	streamtest.Run(t, r.Conn, streamtest.Options{
		NewTopic: func(tb testing.TB, partitions int) string {
			tb.Helper()
			return newTopic(tb, adm, partitions)
		},
		AutoCreatesTopics: true,
	})
}

func TestDevModeKeepsRecordsAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	first, _ := startDev(t, dir)
	publishValues(t, client(first), "dev-orders", 0, "kept")
	require.NoError(t, first.Stop())

	second, _ := startDev(t, dir)
	msgs, err := streamtest.Tail(t, client(second), &streamv1.TailRequest{Topic: "dev-orders", Start: &streamv1.TailRequest_Position{Position: streamv1.StartPosition_START_POSITION_EARLIEST}})
	require.NoError(t, err)
	require.Equal(t, []string{"kept"}, valuesOf(msgs))
}
