package postgreskv_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"github.com/prism-gateway/plugins/conformance/keyvaluetest"
	"github.com/prism-gateway/plugins/conformance/securitytest"
	"github.com/prism-gateway/plugins/core/coretest"
	keyvaluev1 "github.com/prism-gateway/plugins/gen/prism/keyvalue/v1"
	"github.com/prism-gateway/plugins/postgres/postgreskv"
)

func TestSecurity(t *testing.T) {
	dbURL := newDatabase(t)
	securitytest.Run(t, securitytest.Backend{
		Start: func(tb testing.TB, yaml string) *coretest.Running {
			tb.Helper()
			return coretest.Start(tb, postgreskv.New(), coretest.Options{YAML: yaml, Env: map[string]string{"DATABASE_URL": dbURL}})
		},
		NewNamespace: func(_ testing.TB, prefix string) string {
			b := make([]byte, 6)
			_, _ = rand.Read(b)
			return prefix + hex.EncodeToString(b)
		},
		Write: func(ctx context.Context, conn grpc.ClientConnInterface, ns, key, value string) error {
			_, err := keyvaluev1.NewKeyValueServiceClient(conn).Put(ctx, &keyvaluev1.PutRequest{
				Namespace: ns, Id: key, Items: []*keyvaluev1.PutItem{{Key: []byte("k"), Value: []byte(value)}},
			})
			return err
		},
		Read: func(ctx context.Context, conn grpc.ClientConnInterface, ns, key string, opts ...grpc.CallOption) error {
			_, err := keyvaluev1.NewKeyValueServiceClient(conn).Get(ctx, &keyvaluev1.GetRequest{Namespace: ns, Id: key}, opts...)
			return err
		},
		Stored: func(tb testing.TB, ns, key string) bool {
			tb.Helper()
			var n int
			err := connect(tb, dbURL).QueryRow(context.Background(),
				"SELECT count(*) FROM prism_kv_items WHERE namespace = $1 AND id = $2", ns, []byte(key)).Scan(&n)
			require.NoError(tb, err)
			return n > 0
		},
		Exists: func(tb testing.TB, ns string) bool {
			tb.Helper()
			var n int
			err := connect(tb, dbURL).QueryRow(context.Background(),
				"SELECT count(*) FROM prism_kv_items WHERE namespace = $1", ns).Scan(&n)
			require.NoError(tb, err)
			return n > 0
		},
		Conformance: func(t *testing.T, conn grpc.ClientConnInterface) {
			t.Helper()
			keyvaluetest.Run(t, conn, keyvaluetest.Options{})
		},
	})
}
