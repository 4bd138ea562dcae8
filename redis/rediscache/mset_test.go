package rediscache

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// An MSet without expiries is one MSET (one per slot on a cluster): like SET, it clears an old
// expiry, and a repeated key's last entry wins; entries with a ttl still get theirs.
func TestMSetWithoutExpiryWritesLikeSet(t *testing.T) {
	for _, mode := range []struct {
		name    string
		cluster bool
	}{{"single redis", false}, {"redis cluster", true}} {
		t.Run(mode.name, func(t *testing.T) {
			st := newTestStore(t, mode.cluster, false)
			ctx := t.Context()
			a, b, c := testKey(t, st, "a"), testKey(t, st, "b"), testKey(t, st, "{c}")
			require.NoError(t, st.client.Set(ctx, a, "old", time.Hour).Err())

			require.NoError(t, st.mset(ctx, []msetEntry{
				{key: a, value: []byte("1")}, {key: b, value: []byte("2")}, {key: c, value: []byte("3")},
				{key: b, value: []byte("last")},
			}))
			got, err := st.mget(ctx, []string{a, b, c})
			require.NoError(t, err)
			assert.Equal(t, []mgetEntry{
				{found: true, value: []byte("1")}, {found: true, value: []byte("last")}, {found: true, value: []byte("3")},
			}, got)
			ttl, err := st.client.PTTL(ctx, a).Result()
			require.NoError(t, err)
			assert.Equal(t, time.Duration(-1), ttl, "the old expiry is gone, as after a SET")

			require.NoError(t, st.mset(ctx, []msetEntry{{key: a, value: []byte("x")}, {key: c, value: []byte("y"), ttl: time.Minute}}))
			ttl, err = st.client.PTTL(ctx, c).Result()
			require.NoError(t, err)
			assert.Greater(t, ttl, 50*time.Second, "an entry with a ttl keeps it")
		})
	}
}
