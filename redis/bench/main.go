// Command bench compares the redis plugin with direct go-redis on the same Redis: Get and Set of
// 1 KiB values at concurrency 1 and 32, and MGet of 100 keys against one MGET, plus a reference
// row for the bare gRPC hop (a health check). It starts the plugin in a process of its own (this
// binary run again) on a loopback port, talks to it over real gRPC, prints p50/p99 latency and
// throughput ratios, and never fails on the numbers (it exits non-zero only if it cannot run).
//
//	go run ./redis/bench [-duration 3s] [-warmup 500ms] [-inprocess] [-only Get] [-conc 32]
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
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/prism-gateway/plugins/core"
	"github.com/prism-gateway/plugins/core/config"
	cachev1 "github.com/prism-gateway/plugins/gen/prism/cache/v1"
	"github.com/prism-gateway/plugins/redis/rediscache"
)

const (
	namespace  = "bench"
	valueBytes = 1024
	mgetKeys   = 100
	keyCount   = 1000
)

func main() {
	if os.Getenv(pluginProcessEnv) != "" {
		os.Exit(servePlugin())
	}
	duration := flag.Duration("duration", 3*time.Second, "measured time per case")
	warmup := flag.Duration("warmup", 500*time.Millisecond, "unmeasured time before each case")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	pluginProfile := flag.String("plugin-cpuprofile", "", "write a CPU profile of the plugin process to this file")
	only := flag.String("only", "", "run only the cases whose name starts with this")
	conc := flag.Int("conc", 0, "run only this concurrency (default: 1 and 32)")
	inProcess := flag.Bool("inprocess", false, "serve the plugin inside the benchmark's process")
	flag.Parse()
	onlyCase, onlyConc = *only, *conc
	if *pluginProfile != "" {
		if err := os.Setenv(pluginProfileEnv, *pluginProfile); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	if err := run(*duration, *warmup, *inProcess); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		pprof.StopCPUProfile()
		os.Exit(1)
	}
}

// servePlugin is the plugin process: the real plugin, profiled when -plugin-cpuprofile asked.
func servePlugin() int {
	if path := os.Getenv(pluginProfileEnv); path != "" {
		f, err := os.Create(path) //nolint:gosec // the operator names the profile file
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench plugin:", err)
			return 1
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "bench plugin:", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	return core.Run(nil, rediscache.New())
}

// pluginProfileEnv carries -plugin-cpuprofile to the plugin process.
const pluginProfileEnv = "PRISM_BENCH_PLUGIN_CPUPROFILE"

// onlyCase limits the run to the cases whose name starts with it (-only).
var onlyCase string

// onlyConc limits the run to one concurrency (-conc).
var onlyConc int

func run(duration, warmup time.Duration, inProcess bool) error {
	addr := os.Getenv("PRISM_TEST_REDIS_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	conn, stop, err := startPlugin(ctx, addr, inProcess)
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
		direct, proxy func(ctx context.Context, i int) error
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
		addr, runtime.NumCPU(), loadAverage(), duration, where)
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
			d, p, err := compare(ctx, c.direct, c.proxy, conc, warmup, duration)
			if err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			_, _ = fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f\t%.2fx\t%s\t%s\t%s\t%s\t%s\t\n", c.name, conc, d.throughput, p.throughput,
				p.throughput/d.throughput, us(d.p50), us(p.p50), us(p.p50-d.p50), us(d.p99), us(p.p99))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Println("\ntargets: added p50 <= 100us at conc 1; Get ratio >= 0.50x at conc 32; MGet ratio >= 0.80x")
	return nil
}

func redisKey(key string) string { return "prism:" + namespace + ":" + key }

// pluginProcessEnv marks the child process that serves the plugin (see startPlugin).
const pluginProcessEnv = "PRISM_BENCH_PLUGIN_PROCESS"

// pluginEnv is the plugin's configuration for the benchmark; the process environment can tune
// it further (e.g. PRISM_BACKEND_AUTO_PIPELINE=true).
func pluginEnv(redisAddr, port string) map[string]string {
	return map[string]string{
		"REDIS_ADDRESS":            redisAddr,
		"REDIS_USERNAME":           "prism",
		"REDIS_PASSWORD":           "prism",
		"PRISM_CONTROL_PLANE_HOST": "127.0.0.1",
		"PRISM_CONTROL_PLANE_PORT": port,
		"PRISM_METRICS_ENABLED":    "false",
		"PRISM_LOG_LEVEL":          "warn",
	}
}

// startPlugin runs the redis plugin on a free loopback port: by default in a process of its own
// (this binary started again), as it is deployed, so the plugin and the benchmark's client do not
// share a Go scheduler; with -inprocess inside this process.
func startPlugin(ctx context.Context, redisAddr string, inProcess bool) (*grpc.ClientConn, func(), error) {
	var target string
	var stop func()
	if inProcess {
		env := pluginEnv(redisAddr, "0")
		lookup := func(name string) (string, bool) {
			if v, ok := os.LookupEnv(name); ok {
				return v, true
			}
			v, ok := env[name]
			return v, ok
		}
		srv, err := core.New(ctx, rediscache.New(), core.Options{Source: config.Source{LookupEnv: lookup}, LogOutput: io.Discard})
		if err != nil {
			return nil, nil, fmt.Errorf("start plugin: %w", err)
		}
		serveCtx, cancelServe := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = srv.Serve(serveCtx)
		}()
		target = srv.Addr().String()
		stop = func() {
			cancelServe()
			<-done
		}
	} else {
		port, err := freePort()
		if err != nil {
			return nil, nil, err
		}
		self, err := os.Executable()
		if err != nil {
			return nil, nil, fmt.Errorf("find this binary: %w", err)
		}
		cmd := exec.CommandContext(ctx, self) //nolint:gosec // this very binary, run again as the plugin
		cmd.Env = append(os.Environ(), pluginProcessEnv+"=1")
		for k, v := range pluginEnv(redisAddr, port) {
			if _, set := os.LookupEnv(k); !set {
				cmd.Env = append(cmd.Env, k+"="+v)
			}
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return nil, nil, fmt.Errorf("start plugin process: %w", err)
		}
		target = net.JoinHostPort("127.0.0.1", port)
		stop = func() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			_ = cmd.Wait()
		}
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		stop()
		return nil, nil, fmt.Errorf("dial plugin: %w", err)
	}
	health := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: cachev1.CacheService_ServiceDesc.ServiceName})
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			break
		}
		if time.Now().After(deadline) {
			_ = conn.Close()
			stop()
			return nil, nil, fmt.Errorf("plugin not serving after 15s (is Redis at %s up? run make services)", redisAddr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return conn, func() { _ = conn.Close(); stop() }, nil
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer func() { _ = l.Close() }()
	_, port, err := net.SplitHostPort(l.Addr().String())
	return port, err
}

// loadAverage is the 1-minute load average, to read the numbers against.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return "unknown"
	}
	return fields[0]
}

type result struct {
	throughput float64
	p50, p99   time.Duration
}

// rounds is how many alternating direct/plugin slices each case is split into, so load from
// elsewhere on the machine falls on both sides alike.
const rounds = 4

// compare runs direct and plugin in alternating slices from conc goroutines each, in a closed
// loop: warmup unmeasured, then duration per side measured, recording every call's latency.
func compare(ctx context.Context, direct, plugin func(context.Context, int) error, conc int, warmup, duration time.Duration) (result, result, error) {
	if err := loop(ctx, direct, conc, warmup/2, nil); err != nil {
		return result{}, result{}, fmt.Errorf("direct: %w", err)
	}
	if err := loop(ctx, plugin, conc, warmup/2, nil); err != nil {
		return result{}, result{}, fmt.Errorf("plugin: %w", err)
	}
	var d, p sample
	for range rounds {
		if err := d.run(ctx, direct, conc, duration/rounds); err != nil {
			return result{}, result{}, fmt.Errorf("direct: %w", err)
		}
		if err := p.run(ctx, plugin, conc, duration/rounds); err != nil {
			return result{}, result{}, fmt.Errorf("plugin: %w", err)
		}
	}
	return d.result(), p.result(), nil
}

// sample accumulates the latencies and elapsed time of several measured slices.
type sample struct {
	lat     []time.Duration
	elapsed time.Duration
}

func (s *sample) run(ctx context.Context, op func(context.Context, int) error, conc int, d time.Duration) error {
	lat := make([][]time.Duration, conc)
	start := time.Now()
	if err := loop(ctx, op, conc, d, lat); err != nil {
		return err
	}
	s.elapsed += time.Since(start)
	for _, l := range lat {
		s.lat = append(s.lat, l...)
	}
	return nil
}

func (s *sample) result() result {
	slices.Sort(s.lat)
	if len(s.lat) == 0 {
		return result{}
	}
	return result{
		throughput: float64(len(s.lat)) / s.elapsed.Seconds(),
		p50:        s.lat[len(s.lat)/2],
		p99:        s.lat[len(s.lat)*99/100],
	}
}

func loop(ctx context.Context, op func(context.Context, int) error, conc int, d time.Duration, lat [][]time.Duration) error {
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	errs := make([]error, conc)
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local []time.Duration
			if lat != nil {
				local = make([]time.Duration, 0, 1<<16)
			}
			for i := w; ; i += conc {
				t0 := time.Now()
				if t0.After(end) {
					break
				}
				if err := op(ctx, i); err != nil {
					errs[w] = err
					return
				}
				if lat != nil {
					local = append(local, time.Since(t0))
				}
			}
			if lat != nil {
				lat[w] = local
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func us(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Microsecond), 'f', 0, 64) + "us"
}
