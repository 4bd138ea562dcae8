package rediscache

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/prism-gateway/plugins/core/credentials"
	"github.com/prism-gateway/plugins/internal/testsvc"
)

// A command sent but not answered when its connection drops may or may not have run. A plain Set
// is sent again on a new connection (the same value again, the same answer); a Set if_absent is
// not, since a replay would find the key it wrote itself and answer "not stored": it fails with
// UNAVAILABLE instead, and the caller decides. The same holds when the calls ride in pipelined
// batches.
func TestOnlyASetIfAbsentIsNotReplayedAfterADroppedConnection(t *testing.T) {
	cases := []struct {
		name     string
		cond     condition
		pipeline bool
		wantErr  bool
	}{
		{"a plain set is retried on a new connection", always, false, false},
		{"a set if absent reports the failure", ifAbsent, false, true},
		{"a pipelined plain set is retried on a new connection", always, true, false},
		{"a pipelined set if absent reports the failure", ifAbsent, true, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			proxy := testsvc.NewProxy(t, testsvc.RedisAddr(t))
			b := defaultBackend()
			b.Address, b.MinIdleConns, b.AutoPipeline = proxy.Addr(), 0, tc.pipeline
			m, _ := newMetrics()
			st, err := newStore(b, m, credentials.NewStatic(credentials.Credentials{Username: testsvc.User, Password: testsvc.Password}))
			require.NoError(t, err)
			t.Cleanup(func() { _ = st.client.Close() })
			require.NoError(t, st.ping(t.Context()))
			key := fmt.Sprintf("prism:replay:%d", time.Now().UnixNano())
			// Pipelines use a pool of their own: open its connection now, so the Set is written on
			// it below (a Set held while its connection still logs in was never sent, and go-redis
			// rightly sends it again on a new one).
			_, err = st.get(t.Context(), key)
			require.NoError(t, err)

			proxy.Freeze()
			done := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				_, err := st.set(ctx, key, []byte("v"), time.Minute, false, tc.cond)
				done <- err
			}()
			time.Sleep(200 * time.Millisecond) // the command is sent and held by the proxy
			proxy.Cut()
			proxy.Thaw()
			err = <-done
			t.Logf("set after a dropped connection: %v", err)
			if tc.wantErr {
				require.Error(t, err)
				assert.Contains(t, err.Error(), "unavailable")
			} else {
				require.NoError(t, err)
			}
		})
	}
}
