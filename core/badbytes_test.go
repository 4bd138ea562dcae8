package core_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"

	pluginv1 "github.com/prism-gateway/plugins/gen/prism/plugin/v1"
)

// rawCodec sends and receives message bytes as they are, so a test can send what no generated
// client would.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*v.(*[]byte) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

var _ encoding.Codec = rawCodec{}

func stringField(num protowire.Number, v []byte) []byte {
	b := protowire.AppendTag(nil, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func metricsText(t *testing.T, conn grpc.ClientConnInterface) string {
	t.Helper()
	m, err := pluginv1.NewPluginServiceClient(conn).GetMetrics(t.Context(), &pluginv1.GetMetricsRequest{})
	require.NoError(t, err)
	return m.GetText()
}

// Invalid UTF-8 in a string field is the caller's INVALID_ARGUMENT naming the field, logged and
// counted like any other rejection, for unary and streaming methods; grpc-go alone answers it
// with INTERNAL before any interceptor runs.
func TestInvalidUTF8IsInvalidArgumentNamingTheField(t *testing.T) {
	_, r := startProbe(t, "log:\n  level: debug\n", nil)
	bad := []byte{0xff, 0xfe}

	// KeyValue Get: namespace = 1, id = 2.
	req := append(stringField(1, []byte("ns")), stringField(2, bad)...)
	var reply []byte
	err := r.Conn.Invoke(t.Context(), "/prism.keyvalue.v1.KeyValueService/Get", &req, &reply, grpc.ForceCodec(rawCodec{}))
	st := status.Convert(err)
	require.Equal(t, codes.InvalidArgument, st.Code(), "%v", err)
	assert.Equal(t, "id: must be valid UTF-8", st.Message())

	// A valid request right after is unaffected.
	req = append(stringField(1, []byte("ns")), stringField(2, []byte("ok"))...)
	require.NoError(t, r.Conn.Invoke(t.Context(), "/prism.keyvalue.v1.KeyValueService/Get", &req, &reply, grpc.ForceCodec(rawCodec{})))

	text := metricsText(t, r.Conn)
	assert.Contains(t, text, `prism_grpc_server_handled_total{grpc_code="InvalidArgument",grpc_method="Get",grpc_service="prism.keyvalue.v1.KeyValueService"} 1`)
	assert.Contains(t, r.Logs.String(), "id: must be valid UTF-8", "the rejection is logged")

	// A streaming method (health Watch, service = 1).
	stream, err := r.Conn.NewStream(t.Context(), &grpc.StreamDesc{ServerStreams: true}, "/grpc.health.v1.Health/Watch", grpc.ForceCodec(rawCodec{}))
	require.NoError(t, err)
	watch := stringField(1, bad)
	require.NoError(t, stream.SendMsg(&watch))
	require.NoError(t, stream.CloseSend())
	err = stream.RecvMsg(&reply)
	st = status.Convert(err)
	require.Equal(t, codes.InvalidArgument, st.Code(), "%v", err)
	assert.Equal(t, "service: must be valid UTF-8", st.Message())
}

// A request larger than the server accepts is refused by grpc-go before any interceptor; it is
// still logged at warn and counted.
func TestOversizedRequestIsLoggedAndCounted(t *testing.T) {
	_, r := startProbe(t, "control_plane:\n  max_recv_message_bytes: 1024\n", nil)
	req := append(stringField(1, []byte("ns")), stringField(2, make([]byte, 4096))...)
	var reply []byte
	err := r.Conn.Invoke(context.Background(), "/prism.keyvalue.v1.KeyValueService/Get", &req, &reply, grpc.ForceCodec(rawCodec{}))
	require.Equal(t, codes.ResourceExhausted, status.Code(err), "%v", err)
	// Over HTTP: a GetMetrics answer would exceed this server's 1 KiB message limit too.
	_, text := httpGet(t, r.MetricsURL+"/metrics")
	assert.Contains(t, text, `prism_grpc_server_handled_total{grpc_code="ResourceExhausted",grpc_method="Get",grpc_service="prism.keyvalue.v1.KeyValueService"} 1`)
	logs := r.Logs.String()
	assert.Contains(t, logs, `"level":"WARN"`)
	assert.Contains(t, logs, `"code":"ResourceExhausted"`)
}
