// Command bench compares the redis plugin with direct go-redis on the same Redis: Get and Set of
// 1 KiB values at concurrency 1 and 32, and MGet of 100 keys against one MGET, plus a reference
// row for the bare gRPC hop (a health check). It starts the plugin in a process of its own (this
// binary run again) on a loopback port, talks to it over real gRPC, prints p50/p99 latency and
// throughput ratios, and never fails on the numbers (it exits non-zero only if it cannot run).
//
// It ends with the security case (benchkit.RunSecurity): Get at concurrency 1 against plaintext,
// mTLS, and mTLS + one policy + audit to a file; -security runs only that case.
//
//	go run ./redis/bench [-duration 3s] [-warmup 500ms] [-inprocess] [-only Get] [-conc 32] [-security]
//
// Variables such as PRISM_BACKEND_AUTO_PIPELINE=true reach the plugin.
//
// Redis comes from PRISM_TEST_REDIS_ADDR (default 127.0.0.1:6379) with the ACL user prism/prism.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/prism-gateway/plugins/core"
	cachev1 "github.com/prism-gateway/plugins/gen/prism/cache/v1"
	"github.com/prism-gateway/plugins/internal/benchkit"
	"github.com/prism-gateway/plugins/redis/rediscache"
)

const (
	namespace  = "bench"
	valueBytes = 1024
	mgetKeys   = 100
	keyCount   = 1000
)

func main() {
	if os.Getenv(benchkit.PluginProcessEnv) != "" {
		os.Exit(servePlugin())
	}
	duration := flag.Duration("duration", 3*time.Second, "measured time per case")
	warmup := flag.Duration("warmup", 500*time.Millisecond, "unmeasured time before each case")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	pluginProfile := flag.String("plugin-cpuprofile", "", "write a CPU profile of the plugin process to this file")
	only := flag.String("only", "", "run only the cases whose name starts with this")
	conc := flag.Int("conc", 0, "run only this concurrency (default: 1 and 32)")
	inProcess := flag.Bool("inprocess", false, "serve the plugin inside the benchmark's process")
	securityDuration := flag.Duration("security-duration", 5*time.Second, "measured time per mode in the security case")
	securityOnly := flag.Bool("security", false, "run only the security case (plaintext vs mTLS vs mTLS+policy+audit)")
	flag.Parse()
	onlyCase, onlyConc = *only, *conc
	if *pluginProfile != "" {
		if err := os.Setenv(pluginProfileEnv, *pluginProfile); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
	}
	stopProfile, err := benchkit.StartCPUProfile(*cpuProfile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	defer stopProfile()
	if !*securityOnly {
		err = run(*duration, *warmup, *inProcess)
	}
	if err == nil {
		err = runSecurity(*securityDuration, *warmup, *inProcess)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		stopProfile()
		os.Exit(1)
	}
}

// servePlugin is the plugin process: the real plugin, profiled when -plugin-cpuprofile asked.
func servePlugin() int {
	stopProfile, err := benchkit.StartCPUProfile(os.Getenv(pluginProfileEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench plugin:", err)
		return 1
	}
	defer stopProfile()
	return core.Run(nil, rediscache.New())
}

// pluginProfileEnv carries -plugin-cpuprofile to the plugin process.
const pluginProfileEnv = "PRISM_BENCH_PLUGIN_CPUPROFILE"

// onlyCase limits the run to the cases whose name starts with it (-only).
var onlyCase string

// onlyConc limits the run to one concurrency (-conc).
var onlyConc int

func redisAddr() string {
	if addr := os.Getenv("PRISM_TEST_REDIS_ADDR"); addr != "" {
		return addr
	}
	return "127.0.0.1:6379"
}

// pluginSpec is how every case starts the plugin.
func pluginSpec(addr string, inProcess bool) benchkit.PluginSpec {
	return benchkit.PluginSpec{
		New: func() core.Plugin { return rediscache.New() },
		// The process environment can tune the plugin further (e.g. PRISM_BACKEND_AUTO_PIPELINE=true).
		Env: map[string]string{
			"REDIS_ADDRESS":         addr,
			"REDIS_USERNAME":        "prism",
			"REDIS_PASSWORD":        "prism",
			"PRISM_METRICS_ENABLED": "false",
			"PRISM_LOG_LEVEL":       "warn",
		},
		Service:   cachev1.CacheService_ServiceDesc.ServiceName,
		InProcess: inProcess,
		Timeout:   15 * time.Second,
		Backend:   "Redis at " + addr,
	}
}

// runSecurity seeds one key and measures its Get in the three security modes.
func runSecurity(duration, warmup time.Duration, inProcess bool) error {
	addr := redisAddr()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	direct := redis.NewClient(&redis.Options{Addr: addr, Username: "prism", Password: "prism"})
	defer func() { _ = direct.Close() }()
	if err := direct.Set(ctx, redisKey("security"), make([]byte, valueBytes), 0).Err(); err != nil {
		return fmt.Errorf("seed the security key in redis at %s: %w", addr, err)
	}
	return benchkit.RunSecurity(ctx, os.Stdout, benchkit.SecuritySpec{
		Plugin:    pluginSpec(addr, inProcess),
		Name:      "Cache Get 1KiB",
		Namespace: namespace,
		Op: func(conn grpc.ClientConnInterface) benchkit.Op {
			plugin := cachev1.NewCacheServiceClient(conn)
			return func(ctx context.Context, _ int) error {
				resp, err := plugin.Get(ctx, &cachev1.GetRequest{Namespace: namespace, Key: "security"})
				if err == nil && !resp.GetFound() {
					err = errors.New("seeded key not found")
				}
				return err
			}
		},
		Duration: duration,
		Warmup:   warmup,
	})
}

func run(duration, warmup time.Duration, inProcess bool) error {
	addr := redisAddr()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	conn, stop, err := benchkit.StartPlugin(ctx, pluginSpec(addr, inProcess))
	if err != nil {
		return err
	}
	defer stop()
	plugin := cachev1.NewCacheServiceClient(conn)
	health := healthpb.NewHealthClient(conn)

	direct := redis.NewClient(&redis.Options{Addr: addr, Username: "prism", Password: "prism", PoolSize: 64})
	defer func() { _ = direct.Close() }()
	if err := direct.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("ping redis at %s: %w", addr, err)
	}

	value := make([]byte, valueBytes)
	for i := range value {
		value[i] = byte('a' + i%26)
	}
	keys := make([]string, keyCount)
	for i := range keys {
		keys[i] = "k" + strconv.Itoa(i)
		if err := direct.Set(ctx, redisKey(keys[i]), value, 0).Err(); err != nil {
			return fmt.Errorf("seed keys: %w", err)
		}
	}
	mget := keys[:mgetKeys]
	mgetRedis := make([]string, len(mget))
	for i, k := range mget {
		mgetRedis[i] = redisKey(k)
	}

	type pair struct {
		name          string
		direct, proxy benchkit.Op
	}
	cases := []pair{
		{
			name: "Get 1KiB",
			direct: func(ctx context.Context, i int) error {
				return direct.Get(ctx, redisKey(keys[i%keyCount])).Err()
			},
			proxy: func(ctx context.Context, i int) error {
				resp, err := plugin.Get(ctx, &cachev1.GetRequest{Namespace: namespace, Key: keys[i%keyCount]})
				if err == nil && !resp.GetFound() {
					err = errors.New("seeded key not found")
				}
				return err
			},
		},
		{
			name: "Set 1KiB",
			direct: func(ctx context.Context, i int) error {
				return direct.Set(ctx, redisKey(keys[i%keyCount]), value, 0).Err()
			},
			proxy: func(ctx context.Context, i int) error {
				_, err := plugin.Set(ctx, &cachev1.SetRequest{Namespace: namespace, Key: keys[i%keyCount], Value: value})
				return err
			},
		},
		{
			// Reference: the bare gRPC round trip to the plugin (no Redis), against a direct GET.
			name: "ref: health hop",
			direct: func(ctx context.Context, i int) error {
				return direct.Get(ctx, redisKey(keys[i%keyCount])).Err()
			},
			proxy: func(ctx context.Context, _ int) error {
				_, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
				return err
			},
		},
		{
			name: "MGet 100x1KiB",
			direct: func(ctx context.Context, _ int) error {
				return direct.MGet(ctx, mgetRedis...).Err()
			},
			proxy: func(ctx context.Context, _ int) error {
				_, err := plugin.MGet(ctx, &cachev1.MGetRequest{Namespace: namespace, Keys: mget})
				return err
			},
		},
	}

	where := "its own process"
	if inProcess {
		where = "this process"
	}
	fmt.Printf("redis plugin vs direct go-redis: Redis %s, %d CPUs, load average %s, %s per side per case,\nplugin in %s, gRPC over loopback, 1 KiB values\n\n",
		addr, runtime.NumCPU(), benchkit.LoadAverage(), duration, where)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	_, _ = fmt.Fprintln(tw, "case\tconc\tdirect ops/s\tplugin ops/s\tratio\tdirect p50\tplugin p50\tadded p50\tdirect p99\tplugin p99\t")
	for _, c := range cases {
		if !strings.HasPrefix(c.name, onlyCase) {
			continue
		}
		for _, conc := range []int{1, 32} {
			if onlyConc != 0 && conc != onlyConc {
				continue
			}
			d, p, err := benchkit.Compare(ctx, c.direct, c.proxy, conc, warmup, duration)
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			_, _ = fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f\t%.2fx\t%s\t%s\t%s\t%s\t%s\t\n", c.name, conc, d.Throughput, p.Throughput,
				benchkit.Ratio(p.Throughput, d.Throughput), benchkit.Micros(d.P50), benchkit.Micros(p.P50),
				benchkit.Micros(p.P50-d.P50), benchkit.Micros(d.P99), benchkit.Micros(p.P99))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Println("\ntargets: added p50 <= 100us at conc 1; Get ratio >= 0.50x at conc 32; MGet ratio >= 0.80x")
	return nil
}

func redisKey(key string) string { return "prism:" + namespace + ":" + key }
