package core_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"

	"github.com/prism-gateway/plugins/core"
	"github.com/prism-gateway/plugins/core/config"
	cachev1 "github.com/prism-gateway/plugins/gen/prism/cache/v1"
	keyvaluev1 "github.com/prism-gateway/plugins/gen/prism/keyvalue/v1"
	"github.com/prism-gateway/plugins/internal/testsvc"
	"github.com/prism-gateway/plugins/postgres/postgreskv"
	"github.com/prism-gateway/plugins/redis/rediscache"
)

// startBarePlugin initializes and starts p on env alone, as core.New would, without serving it.
func startBarePlugin(tb testing.TB, p core.Plugin, env map[string]string) {
	tb.Helper()
	lookup := func(name string) (string, bool) { v, ok := env[name]; return v, ok }
	cfg, err := config.Load(p.ConfigSchema(), config.Source{LookupEnv: lookup})
	require.NoError(tb, err)
	ctx := context.Background()
	require.NoError(tb, p.Initialize(ctx, cfg, core.Env{Logger: slog.New(slog.DiscardHandler), Metrics: prometheus.NewRegistry()}))
	require.NoError(tb, p.Start(ctx))
	tb.Cleanup(func() { _ = p.Stop(context.Background()) })
	require.Eventually(tb, func() bool { return p.Health(ctx) == nil }, 30*time.Second, 50*time.Millisecond, "%s backend healthy", p.Info().Name)
}

// serveWithCodec serves p's data services on a gRPC server of their own with the given codec
// and returns a client connection to it.
func serveWithCodec(tb testing.TB, p core.Plugin, codec encoding.CodecV2) *grpc.ClientConn {
	tb.Helper()
	srv := grpc.NewServer(grpc.ForceServerCodecV2(codec), grpc.MaxRecvMsgSize(16<<20), grpc.MaxSendMsgSize(16<<20))
	p.Register(srv)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(tb, err)
	go func() { _ = srv.Serve(l) }()
	tb.Cleanup(srv.Stop)
	// The client decodes with the server's codec in both cases, so grpc-go's zeroing on the
	// client's side does not hide the server's difference.
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20), grpc.ForceCodecV2(core.NewServerCodec())))
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = conn.Close() })
	return conn
}

// benchDatabase creates an empty PostgreSQL database for one benchmark, dropped at the end.
func benchDatabase(tb testing.TB) string {
	tb.Helper()
	base := testsvc.PostgresURL(tb)
	var b [6]byte
	_, err := rand.Read(b[:])
	require.NoError(tb, err)
	name := "prism_codec_bench_" + hex.EncodeToString(b[:])
	exec := func(sql string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			return err
		}
		defer func() { _ = conn.Close(context.Background()) }()
		_, err = conn.Exec(ctx, sql)
		return err
	}
	require.NoError(tb, exec("CREATE DATABASE "+name))
	tb.Cleanup(func() {
		if err := exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)"); err != nil {
			tb.Errorf("drop benchmark database: %v", err)
		}
	})
	u, err := url.Parse(base)
	require.NoError(tb, err)
	u.Path = "/" + name
	return u.String()
}

// processCPU is the user+system CPU this process (client, server and backend clients) used.
func processCPU(tb testing.TB) time.Duration {
	tb.Helper()
	var ru syscall.Rusage
	require.NoError(tb, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkServerCodec runs real plugin calls against the shared Redis and PostgreSQL through
// two gRPC servers that differ only in their codec: grpc-go's proto codec and the server's own,
// in the same run. <codec>-cpu-µs/op is this process's CPU (client and server side) per call;
// ns/op covers one call to each server.
func BenchmarkServerCodec(b *testing.B) {
	ctx := context.Background()
	cache := rediscache.New()
	startBarePlugin(b, cache, map[string]string{
		"REDIS_ADDRESS": testsvc.RedisAddr(b), "REDIS_USERNAME": testsvc.User, "REDIS_PASSWORD": testsvc.Password,
	})
	kv := postgreskv.New()
	startBarePlugin(b, kv, map[string]string{"DATABASE_URL": benchDatabase(b)})

	ns := fmt.Sprintf("codecbench%d", time.Now().UnixNano())
	value := func(n int) []byte { return bytes.Repeat([]byte("v"), n) }
	setup := cachev1.NewCacheServiceClient(serveWithCodec(b, cache, encoding.GetCodecV2("proto")))
	_, err := setup.Set(ctx, &cachev1.SetRequest{Namespace: ns, Key: "64k", Value: value(64 << 10), Ttl: nil})
	require.NoError(b, err)
	_, err = setup.Set(ctx, &cachev1.SetRequest{Namespace: ns, Key: "1m", Value: value(1 << 20)})
	require.NoError(b, err)
	keys := make([]string, 100)
	entries := make([]*cachev1.MSetEntry, 100)
	items := make([]*keyvaluev1.PutItem, 100)
	for i := range keys {
		keys[i] = "k" + strconv.Itoa(i)
		entries[i] = &cachev1.MSetEntry{Key: keys[i], Value: value(1 << 10)}
		items[i] = &keyvaluev1.PutItem{Key: []byte(keys[i]), Value: value(1 << 10)}
	}
	_, err = setup.MSet(ctx, &cachev1.MSetRequest{Namespace: ns, Entries: entries})
	require.NoError(b, err)
	b.Cleanup(func() {
		_, _ = setup.Delete(context.Background(), &cachev1.DeleteRequest{Namespace: ns, Keys: append(keys, "64k", "1m")})
	})
	_, err = keyvaluev1.NewKeyValueServiceClient(serveWithCodec(b, kv, encoding.GetCodecV2("proto"))).Put(ctx,
		&keyvaluev1.PutRequest{Namespace: ns, Id: "record", Items: items})
	require.NoError(b, err)

	codecs := []struct {
		name  string
		codec encoding.CodecV2
	}{{"grpc", encoding.GetCodecV2("proto")}, {"pooled", core.NewServerCodec()}}
	type call func(cache cachev1.CacheServiceClient, kv keyvaluev1.KeyValueServiceClient) error
	cases := []struct {
		name string
		call call
	}{
		{"cache-get=64KiB", func(c cachev1.CacheServiceClient, _ keyvaluev1.KeyValueServiceClient) error {
			_, err := c.Get(ctx, &cachev1.GetRequest{Namespace: ns, Key: "64k"})
			return err
		}},
		{"cache-get=1MiB", func(c cachev1.CacheServiceClient, _ keyvaluev1.KeyValueServiceClient) error {
			_, err := c.Get(ctx, &cachev1.GetRequest{Namespace: ns, Key: "1m"})
			return err
		}},
		{"cache-mget=100x1KiB", func(c cachev1.CacheServiceClient, _ keyvaluev1.KeyValueServiceClient) error {
			_, err := c.MGet(ctx, &cachev1.MGetRequest{Namespace: ns, Keys: keys})
			return err
		}},
		{"cache-mset=100x1KiB", func(c cachev1.CacheServiceClient, _ keyvaluev1.KeyValueServiceClient) error {
			_, err := c.MSet(ctx, &cachev1.MSetRequest{Namespace: ns, Entries: entries})
			return err
		}},
		{"kv-get=100x1KiB", func(_ cachev1.CacheServiceClient, k keyvaluev1.KeyValueServiceClient) error {
			resp, err := k.Get(ctx, &keyvaluev1.GetRequest{Namespace: ns, Id: "record"})
			if err == nil && len(resp.GetItems()) != 100 {
				err = fmt.Errorf("got %d items", len(resp.GetItems()))
			}
			return err
		}},
	}
	type target struct {
		cache cachev1.CacheServiceClient
		kv    keyvaluev1.KeyValueServiceClient
	}
	targets := make([]target, len(codecs))
	for i, c := range codecs {
		targets[i] = target{cachev1.NewCacheServiceClient(serveWithCodec(b, cache, c.codec)), keyvaluev1.NewKeyValueServiceClient(serveWithCodec(b, kv, c.codec))}
	}
	// Both servers are called in alternating blocks inside one benchmark, so load from anything
	// else on the machine falls on both alike.
	const block = 10
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			wall := make([]time.Duration, len(codecs))
			cpu := make([]time.Duration, len(codecs))
			calls := 0
			for b.Loop() {
				for i, t := range targets {
					c0, w0 := processCPU(b), time.Now()
					for range block {
						if err := tc.call(t.cache, t.kv); err != nil {
							b.Fatal(err)
						}
					}
					wall[i] += time.Since(w0)
					cpu[i] += processCPU(b) - c0
				}
				calls += block
			}
			for i, c := range codecs {
				b.ReportMetric(float64(wall[i].Microseconds())/float64(calls), c.name+"-µs/op")
				b.ReportMetric(float64(cpu[i].Microseconds())/float64(calls), c.name+"-cpu-µs/op")
			}
		})
	}
}
