package core_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	keyvaluev1 "github.com/prism-gateway/plugins/gen/prism/keyvalue/v1"
	pluginv1 "github.com/prism-gateway/plugins/gen/prism/plugin/v1"
)

// slowConn writes in small chunks with pauses, so a large request takes a while to upload.
type slowConn struct {
	net.Conn
	chunk int
	pause time.Duration
}

func (c *slowConn) Write(b []byte) (int, error) {
	written := 0
	for len(b) > 0 {
		n := min(len(b), c.chunk)
		if _, err := c.Conn.Write(b[:n]); err != nil {
			return written, err
		}
		written += n
		b = b[n:]
		time.Sleep(c.pause)
	}
	return written, nil
}

// slowClient dials the plugin through a connection that writes chunk bytes per pause.
func slowClient(t *testing.T, addr string, chunk int, pause time.Duration) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			return &slowConn{Conn: c, chunk: chunk, pause: pause}, nil
		}))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// A call whose request was still uploading when the drain began was admitted when it arrived:
// it completes, the drain waits for it, and only calls that start afterwards are refused.
func TestDrainAdmitsCallsWhoseUploadHadStarted(t *testing.T) {
	_, r := startProbe(t, "", nil)
	// About 900 KiB at 16 KiB per 25 ms: well over a second of upload.
	slow := slowClient(t, r.Addr, 16<<10, 25*time.Millisecond)

	keys := make([][]byte, 900)
	for i := range keys {
		keys[i] = make([]byte, 1024)
		keys[i][0] = byte(i)
	}
	uploaded := make(chan error, 1)
	started := time.Now()
	go func() {
		_, err := keyvaluev1.NewKeyValueServiceClient(slow).Get(context.Background(), &keyvaluev1.GetRequest{Namespace: "ns", Id: "upload", Keys: keys})
		uploaded <- err
	}()
	time.Sleep(300 * time.Millisecond) // the headers are out; the body is still arriving

	drained, err := pluginv1.NewPluginServiceClient(r.Conn).Drain(t.Context(), &pluginv1.DrainRequest{Timeout: durationpb.New(20 * time.Second)})
	require.NoError(t, err)
	select {
	case err := <-uploaded:
		require.NoError(t, err, "a call that began before the drain completes")
	case <-time.After(20 * time.Second):
		t.Fatal("the uploading call never finished")
	}
	t.Logf("upload took %s; drain reported drained=%v remaining=%d", time.Since(started).Round(time.Millisecond), drained.GetDrained(), drained.GetInFlightRemaining())
	assert.True(t, drained.GetDrained(), "the drain waited for the uploading call")
	assert.Greater(t, time.Since(started), 500*time.Millisecond, "the upload really was in progress during the drain")

	_, err = keyvaluev1.NewKeyValueServiceClient(r.Conn).Get(t.Context(), &keyvaluev1.GetRequest{Namespace: "ns", Id: "after"})
	assert.Equal(t, codes.Unavailable, status.Code(err), "a call that starts after the drain is refused: %v", err)
}

// A drain that times out counts calls still uploading as cut off.
func TestDrainCountsUploadingCallsAsInFlight(t *testing.T) {
	_, r := startProbe(t, "", nil)
	slow := slowClient(t, r.Addr, 8<<10, 50*time.Millisecond)
	keys := [][]byte{make([]byte, 600<<10)}
	go func() {
		_, _ = keyvaluev1.NewKeyValueServiceClient(slow).Get(context.Background(), &keyvaluev1.GetRequest{Namespace: "ns", Id: "upload", Keys: keys})
	}()
	time.Sleep(300 * time.Millisecond)
	drained, err := pluginv1.NewPluginServiceClient(r.Conn).Drain(t.Context(), &pluginv1.DrainRequest{Timeout: durationpb.New(200 * time.Millisecond)})
	require.NoError(t, err)
	assert.False(t, drained.GetDrained())
	assert.Equal(t, int64(1), drained.GetInFlightRemaining(), "the uploading call is in flight")
}
