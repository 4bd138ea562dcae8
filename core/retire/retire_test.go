package retire_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/prism-gateway/plugins/core/retire"
)

func TestRetire(t *testing.T) {
	t.Run("a client is closed once its grace has passed", func(t *testing.T) {
		var r retire.Retirer
		closed := make(chan time.Time, 1)
		start := time.Now()
		r.Retire(50*time.Millisecond, func() { closed <- time.Now() })
		select {
		case at := <-closed:
			assert.GreaterOrEqual(t, at.Sub(start), 50*time.Millisecond)
		case <-time.After(10 * time.Second):
			t.Fatal("the client was not closed after its grace")
		}
		r.Close()
	})

	t.Run("a client is not closed during its grace", func(t *testing.T) {
		var r retire.Retirer
		var closed atomic.Bool
		r.Retire(time.Hour, func() { closed.Store(true) })
		time.Sleep(20 * time.Millisecond)
		assert.False(t, closed.Load())
		r.Close()
		assert.True(t, closed.Load(), "Close closes the clients still in their grace")
	})

	t.Run("close closes every waiting client before it returns", func(t *testing.T) {
		var r retire.Retirer
		var closed atomic.Int32
		for range 10 {
			r.Retire(time.Hour, func() { closed.Add(1) })
		}
		r.Close()
		assert.Equal(t, int32(10), closed.Load())
	})

	t.Run("a client retired after close is closed at once", func(t *testing.T) {
		var r retire.Retirer
		r.Close()
		var closed atomic.Bool
		r.Retire(time.Hour, func() { closed.Store(true) })
		assert.True(t, closed.Load())
		r.Close() // a second Close is harmless
	})

	t.Run("retire and close race without losing a client", func(t *testing.T) {
		var r retire.Retirer
		var closed atomic.Int32
		done := make(chan struct{})
		go func() {
			defer close(done)
			for range 100 {
				r.Retire(time.Hour, func() { closed.Add(1) })
			}
		}()
		r.Close()
		<-done
		r.Close()
		require.Equal(t, int32(100), closed.Load())
	})
}
