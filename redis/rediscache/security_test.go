package rediscache_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	"github.com/prism-gateway/plugins/conformance/cachetest"
	"github.com/prism-gateway/plugins/conformance/securitytest"
	"github.com/prism-gateway/plugins/core/coretest"
	cachev1 "github.com/prism-gateway/plugins/gen/prism/cache/v1"
	"github.com/prism-gateway/plugins/internal/testsvc"
	"github.com/prism-gateway/plugins/redis/rediscache"
)

func TestSecurity(t *testing.T) {
	addr := testsvc.RedisAddr(t)
	cli := newRedisCLI(addr, false)
	securitytest.Run(t, securitytest.Backend{
		Start: func(tb testing.TB, yaml string) *coretest.Running {
			tb.Helper()
			return coretest.Start(tb, rediscache.New(), coretest.Options{YAML: yaml, Env: map[string]string{
				"REDIS_ADDRESS": addr, "REDIS_USERNAME": testsvc.User, "REDIS_PASSWORD": testsvc.Password,
			}})
		},
		NewNamespace: func(_ testing.TB, prefix string) string { return uniqueNamespace(prefix) },
		Write: func(ctx context.Context, conn grpc.ClientConnInterface, ns, key, value string) error {
			_, err := cachev1.NewCacheServiceClient(conn).Set(ctx, &cachev1.SetRequest{Namespace: ns, Key: key, Value: []byte(value)})
			return err
		},
		Read: func(ctx context.Context, conn grpc.ClientConnInterface, ns, key string, opts ...grpc.CallOption) error {
			_, err := cachev1.NewCacheServiceClient(conn).Get(ctx, &cachev1.GetRequest{Namespace: ns, Key: key}, opts...)
			return err
		},
		Stored: func(tb testing.TB, ns, key string) bool {
			tb.Helper()
			out, err := cli.run(context.Background(), nil, "EXISTS", cli.keyPrefix+ns+":"+key)
			require.NoError(tb, err)
			return strings.TrimSpace(string(out)) == "1"
		},
		Exists: func(tb testing.TB, ns string) bool {
			tb.Helper()
			out, err := cli.run(context.Background(), nil, "--scan", "--pattern", cli.keyPrefix+ns+":*")
			require.NoError(tb, err)
			return strings.TrimSpace(string(out)) != ""
		},
		Conformance: func(t *testing.T, conn grpc.ClientConnInterface) {
			t.Helper()
			cachetest.Run(t, conn, cachetest.Options{Raw: cli})
		},
	})
}

func uniqueNamespace(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}
