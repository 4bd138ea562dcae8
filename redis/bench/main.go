// Command bench measures the redis plugin against go-redis used directly and against the floor
// on the same Redis: Get and Set of 1 KiB values and MGet and MSet of 100 keys at concurrency 1
// and 32, then Get at fixed arrival rates (open loop, 50 % and 80 % of the slowest side's
// maximum at concurrency 32). The floor is a bare grpc-go server (no interceptors) serving the same Cache
// messages, whose handlers make one plain GET, SET, MGET or MSET with go-redis. The plugin and the
// floor run in processes of their own (this binary run again), so the CPU time per operation
// of each is read from /proc/<pid>/stat; the benchmark's own from getrusage. Each case is
// repeated (-repeat) and printed as median ± half the range, with plugin ÷ direct and
// plugin ÷ floor for throughput, p50, p99 and CPU/op. It never fails on the numbers (it exits
// non-zero only if it cannot run).
//
// Scaling sweeps are opt-in (-sweep conc,size,mget or all): Get throughput at concurrency 1, 4,
// 16, 64 and 256; Get p50 for 1 KiB, 64 KiB and 1 MiB values; MGet of 10, 100 and 1000 keys.
// -markdown prints every table as Markdown for the README.
//
// It ends with the security case (benchkit.RunSecurity): Get at concurrency 1 against plaintext,
// mTLS, and mTLS + one policy + audit to a file; -security runs only that case.
//
// -pipeline adds a second plugin process with backend.auto_pipeline on as one more side
// ("pipelined"), measured in the same alternating slices, and prints pipelined ÷ plugin for
// every case.
//
//	go run ./redis/bench [-duration 1s] [-repeat 3] [-open 0.5,0.8] [-sweep all] [-markdown] [-only Get] [-conc 1,32,64] [-pipeline]
//
// Variables such as PRISM_BACKEND_AUTO_PIPELINE=true reach the plugin (every plugin process).
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
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"

	"github.com/prism-gateway/plugins/core"
	cachev1 "github.com/prism-gateway/plugins/gen/prism/cache/v1"
	"github.com/prism-gateway/plugins/internal/benchkit"
	"github.com/prism-gateway/plugins/redis/rediscache"
)

const (
	namespace = "bench"
	keyCount  = 1000
	// poolSize is the plugin's default backend.pool_size, given to all three sides.
	poolSize = 50
)

// The sweeps -sweep accepts.
var sweepNames = []string{"conc", "size", "mget"}

func main() {
	if code, ok := benchkit.Child(func() core.Plugin { return rediscache.New() }, registerFloor); ok {
		os.Exit(code)
	}
	f := benchkit.Register(flag.CommandLine, benchkit.Config{Duration: time.Second, Warmup: 300 * time.Millisecond, Repeats: 3}, sweepNames)
	only := flag.String("only", "", "run only the cases whose name starts with this (Get, Set, MGet)")
	conc := flag.String("conc", "1,32", "the concurrencies of the main cases, comma-separated")
	pipelined := flag.Bool("pipeline", false, "add a plugin side with backend.auto_pipeline: true and print its ratio to the plugin")
	securityDuration := flag.Duration("security-duration", 5*time.Second, "measured time per mode in the security case (0: skip it)")
	securityOnly := flag.Bool("security", false, "run only the security case (plaintext vs mTLS vs mTLS+policy+audit)")
	flag.Parse()
	err := f.Validate()
	stopProfile := func() {}
	if err == nil {
		stopProfile, err = benchkit.StartCPUProfile(f.CPUProfile)
	}
	if err == nil && !*securityOnly {
		err = run(f, *only, *conc, *pipelined)
	}
	if err == nil && *securityDuration > 0 {
		err = runSecurity(*securityDuration, f.Warmup, f.InProcess)
	}
	stopProfile()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func redisAddr() string {
	if addr := os.Getenv("PRISM_TEST_REDIS_ADDR"); addr != "" {
		return addr
	}
	return "127.0.0.1:6379"
}

func redisKey(key string) string { return "prism:" + namespace + ":" + key }

// newRedis is the go-redis client of the direct side and of the floor.
func newRedis(addr string, pool int) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, Username: "prism", Password: "prism", PoolSize: pool})
}

// pipelinedSide names the plugin side with backend.auto_pipeline on (-pipeline).
const pipelinedSide = "pipelined"

// pluginSpec is how every case starts the plugin.
func pluginSpec(addr string, inProcess bool) benchkit.PluginSpec {
	return benchkit.PluginSpec{
		New: func() core.Plugin { return rediscache.New() },
		// The process environment can tune the plugin further (e.g. PRISM_BACKEND_AUTO_PIPELINE=true).
		Env: map[string]string{
			"REDIS_ADDRESS":           addr,
			"REDIS_USERNAME":          "prism",
			"REDIS_PASSWORD":          "prism",
			"PRISM_BACKEND_POOL_SIZE": strconv.Itoa(poolSize),
			"PRISM_METRICS_ENABLED":   "false",
			"PRISM_LOG_LEVEL":         "warn",
		},
		Service:   cachev1.CacheService_ServiceDesc.ServiceName,
		InProcess: inProcess,
		Timeout:   15 * time.Second,
		Backend:   "Redis at " + addr,
	}
}

// bench holds the three sides' clients.
type bench struct {
	f             *benchkit.Flags
	direct        *redis.Client
	plugin, floor *benchkit.Server
	// pipelined is the plugin with backend.auto_pipeline on; nil without -pipeline.
	pipelined *benchkit.Server
	value     []byte
	keys      []string
}

// side is one side's calls: the direct client or a Cache client on the plugin or the floor.
type side struct {
	name   string
	server *benchkit.Server
	get    func(ctx context.Context, key string) error
	set    func(ctx context.Context, key string, value []byte) error
	mget   func(ctx context.Context, keys []string) error
	mset   func(ctx context.Context, keys []string, value []byte) error
}

func (b *bench) sides() []side {
	sides := []side{{
		name: benchkit.Direct,
		get:  func(ctx context.Context, key string) error { return b.direct.Get(ctx, redisKey(key)).Err() },
		set: func(ctx context.Context, key string, value []byte) error {
			return b.direct.Set(ctx, redisKey(key), value, 0).Err()
		},
		mget: func(ctx context.Context, keys []string) error {
			rk := make([]string, len(keys))
			for i, k := range keys {
				rk[i] = redisKey(k)
			}
			return b.direct.MGet(ctx, rk...).Err()
		},
		mset: func(ctx context.Context, keys []string, value []byte) error {
			pairs := make([]any, 0, 2*len(keys))
			for _, k := range keys {
				pairs = append(pairs, redisKey(k), value)
			}
			return b.direct.MSet(ctx, pairs...).Err()
		},
	}}
	servers := []struct {
		name string
		srv  *benchkit.Server
	}{{benchkit.Floor, b.floor}, {benchkit.Plugin, b.plugin}}
	if b.pipelined != nil {
		servers = append(servers, struct {
			name string
			srv  *benchkit.Server
		}{pipelinedSide, b.pipelined})
	}
	for _, s := range servers {
		client := cachev1.NewCacheServiceClient(s.srv.Conn)
		sides = append(sides, side{
			name:   s.name,
			server: s.srv,
			get: func(ctx context.Context, key string) error {
				resp, err := client.Get(ctx, &cachev1.GetRequest{Namespace: namespace, Key: key})
				if err == nil && !resp.GetFound() {
					err = fmt.Errorf("seeded key %s not found", key)
				}
				return err
			},
			set: func(ctx context.Context, key string, value []byte) error {
				_, err := client.Set(ctx, &cachev1.SetRequest{Namespace: namespace, Key: key, Value: value})
				return err
			},
			mget: func(ctx context.Context, keys []string) error {
				resp, err := client.MGet(ctx, &cachev1.MGetRequest{Namespace: namespace, Keys: keys})
				if err == nil && len(resp.GetEntries()) != len(keys) {
					err = fmt.Errorf("MGet answered %d entries for %d keys", len(resp.GetEntries()), len(keys))
				}
				return err
			},
			mset: func(ctx context.Context, keys []string, value []byte) error {
				entries := make([]*cachev1.MSetEntry, len(keys))
				for i, k := range keys {
					entries[i] = &cachev1.MSetEntry{Key: k, Value: value}
				}
				_, err := client.MSet(ctx, &cachev1.MSetRequest{Namespace: namespace, Entries: entries})
				return err
			},
		})
	}
	return sides
}

// getCase is Get of the keys at conc (or at rate calls per second, open loop).
func (b *bench) getCase(name string, conc int, rate float64, keys []string) benchkit.Case {
	c := benchkit.Case{Name: name, Conc: conc, Rate: rate}
	for _, s := range b.sides() {
		c.Sides = append(c.Sides, benchkit.Side{Name: s.name, Server: s.server, Op: func(ctx context.Context, i int) error {
			return s.get(ctx, keys[i%len(keys)])
		}})
	}
	return c
}

func (b *bench) setCase(conc int) benchkit.Case {
	c := benchkit.Case{Name: "Set 1KiB", Conc: conc}
	for _, s := range b.sides() {
		c.Sides = append(c.Sides, benchkit.Side{Name: s.name, Server: s.server, Op: func(ctx context.Context, i int) error {
			return s.set(ctx, b.keys[i%keyCount], b.value)
		}})
	}
	return c
}

// mgetCase is MGet of the first n keys; throughput and CPU count keys.
func (b *bench) mgetCase(n, conc int) benchkit.Case {
	keys := b.keys[:n]
	c := benchkit.Case{Name: fmt.Sprintf("MGet %dx1KiB", n), Conc: conc, PerOp: n, Unit: "keys"}
	for _, s := range b.sides() {
		c.Sides = append(c.Sides, benchkit.Side{Name: s.name, Server: s.server, Op: func(ctx context.Context, _ int) error {
			return s.mget(ctx, keys)
		}})
	}
	return c
}

// msetCase is MSet of n keys of 1 KiB (their own keys, not the seeded ones); throughput and CPU
// count keys.
func (b *bench) msetCase(n, conc int) benchkit.Case {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "mset" + strconv.Itoa(i)
	}
	c := benchkit.Case{Name: fmt.Sprintf("MSet %dx1KiB", n), Conc: conc, PerOp: n, Unit: "keys"}
	for _, s := range b.sides() {
		c.Sides = append(c.Sides, benchkit.Side{Name: s.name, Server: s.server, Op: func(ctx context.Context, _ int) error {
			return s.mset(ctx, keys, b.value)
		}})
	}
	return c
}

func run(f *benchkit.Flags, only, concList string, pipelined bool) error {
	var concs []int
	for _, c := range strings.Split(concList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(c))
		if err != nil || n < 1 {
			return fmt.Errorf("-conc: want positive integers separated by commas, got %q", concList)
		}
		concs = append(concs, n)
	}
	addr := redisAddr()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	b := &bench{f: f, direct: newRedis(addr, poolSize)}
	defer func() { _ = b.direct.Close() }()
	if err := b.direct.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("ping redis at %s: %w", addr, err)
	}
	spec := pluginSpec(addr, f.InProcess)
	spec.CPUProfile = f.PluginCPUProfile
	var err error
	if b.plugin, err = benchkit.StartPluginServer(ctx, spec); err != nil {
		return err
	}
	defer b.plugin.Close()
	if pipelined {
		ps := pluginSpec(addr, f.InProcess)
		ps.Env["PRISM_BACKEND_AUTO_PIPELINE"] = "true"
		if b.pipelined, err = benchkit.StartPluginServer(ctx, ps); err != nil {
			return err
		}
		defer b.pipelined.Close()
	}
	b.floor, err = benchkit.StartFloor(ctx, f.FloorSpec(benchkit.FloorSpec{
		Env:     map[string]string{floorAddrEnv: addr, floorPoolEnv: strconv.Itoa(poolSize)},
		Service: cachev1.CacheService_ServiceDesc.ServiceName,
		Timeout: 15 * time.Second,
		Backend: "Redis at " + addr,
	}))
	if err != nil {
		return err
	}
	defer b.floor.Close()

	b.value = filled(1024)
	b.keys = make([]string, keyCount)
	for i := range b.keys {
		b.keys[i] = "k" + strconv.Itoa(i)
		if err := b.direct.Set(ctx, redisKey(b.keys[i]), b.value, 0).Err(); err != nil {
			return fmt.Errorf("seed keys: %w", err)
		}
	}

	where := "its own process"
	if f.InProcess {
		where = "this process"
	}
	fmt.Printf("redis plugin vs direct go-redis vs floor (bare grpc-go + one Redis command): Redis %s, %d CPUs,\n"+
		"load average %s, plugin in %s, floor in its own process, gRPC over loopback, pool %d on every side;\n%s\n",
		addr, runtime.NumCPU(), benchkit.LoadAverage(), where, poolSize, f.Describe())

	want := func(name string) bool { return strings.HasPrefix(name, only) }
	var results []benchkit.CaseResult
	measure := func(c benchkit.Case) (benchkit.CaseResult, error) {
		r, err := benchkit.Run(ctx, f.Config, c)
		if err != nil {
			return r, fmt.Errorf("%s at %d: %w", c.Name, c.Conc, err)
		}
		results = append(results, r)
		return r, nil
	}
	var openBasis *benchkit.CaseResult
	for _, conc := range concs {
		if want("Get 1KiB") {
			r, err := measure(b.getCase("Get 1KiB", conc, 0, b.keys))
			if err != nil {
				return err
			}
			if openBasis == nil || conc > openBasis.Conc {
				openBasis = &r
			}
		}
		if want("Set 1KiB") {
			if _, err := measure(b.setCase(conc)); err != nil {
				return err
			}
		}
		if want("MGet 100x1KiB") {
			if _, err := measure(b.mgetCase(100, conc)); err != nil {
				return err
			}
		}
		if want("MSet 100x1KiB") {
			if _, err := measure(b.msetCase(100, conc)); err != nil {
				return err
			}
		}
	}
	if openBasis != nil {
		for _, c := range f.OpenCases(*openBasis, func(rate float64, label string) benchkit.Case {
			return b.getCase("Get 1KiB open "+label, openBasis.Conc, rate, b.keys)
		}) {
			if _, err := measure(c); err != nil {
				return err
			}
		}
	}
	if err := benchkit.CaseTable("", results).Write(os.Stdout, f.Markdown); err != nil {
		return err
	}
	if pipelined {
		if err := pipelinedTable(results).Write(os.Stdout, f.Markdown); err != nil {
			return err
		}
	}
	if openBasis != nil && len(f.OpenRates) > 0 {
		fmt.Printf("\nOpen-loop rows: calls arrive at the rate shown (%v of the slowest side's maximum at concurrency %d), up to %d in\n"+
			"flight; latency counts from each call's scheduled time, so queueing shows (client CPU includes the harness's scheduling).\n",
			f.OpenRates, openBasis.Conc, benchkit.OpenWorkers)
	}
	fmt.Println("targets: plugin CPU/op <= 1.2x floor; p50 at conc 1 <= 1.2x floor; throughput at 32 >= 0.9x floor; MGet-100 >= 0.7x direct")
	return b.sweeps(ctx, f)
}

// pipelinedTable is pipelined ÷ plugin for every case, repeat by repeat.
func pipelinedTable(results []benchkit.CaseResult) benchkit.Table {
	metrics := []benchkit.Metric{benchkit.Throughput, benchkit.P50, benchkit.P99, benchkit.ServerCPU}
	t := benchkit.Table{
		Title: "backend.auto_pipeline: the pipelined plugin ÷ the plugin (same run, alternating slices)",
		Rows:  [][]string{{"case", "load", "throughput", "p50", "p99", "server CPU/op"}},
	}
	for _, r := range results {
		row := []string{r.Name, strconv.Itoa(r.Conc)}
		if r.Rate > 0 {
			row[1] = fmt.Sprintf("%.0f/s", r.Rate)
		}
		for _, m := range metrics {
			s := r.Ratio(m, pipelinedSide, benchkit.Plugin)
			row = append(row, fmt.Sprintf("%.2fx ±%.0f%%", s.Mid, 100*s.Spread()))
		}
		t.Rows = append(t.Rows, row)
	}
	return t
}

// sweeps runs the scaling sweeps asked for and prints a table for each.
func (b *bench) sweeps(ctx context.Context, f *benchkit.Flags) error {
	sweep := func(title, param string, points []benchkit.SweepPoint, metrics ...benchkit.Metric) error {
		return benchkit.RunSweep(ctx, f.Config, os.Stdout, f.Markdown, title, param, points, metrics...)
	}
	if f.Sweep("conc") {
		var points []benchkit.SweepPoint
		for _, conc := range []int{1, 4, 16, 64, 256} {
			points = append(points, benchkit.SweepPoint{Label: strconv.Itoa(conc), Case: b.getCase("Get 1KiB", conc, 0, b.keys)})
		}
		if err := sweep("Get 1 KiB: throughput vs concurrency", "concurrency", points, benchkit.Throughput, benchkit.P50); err != nil {
			return err
		}
	}
	if f.Sweep("size") {
		var points []benchkit.SweepPoint
		for _, size := range []struct {
			label string
			n     int
		}{{"1 KiB", 1 << 10}, {"64 KiB", 64 << 10}, {"1 MiB", 1 << 20}} {
			key := "size-" + strconv.Itoa(size.n)
			if err := b.direct.Set(ctx, redisKey(key), filled(size.n), 0).Err(); err != nil {
				return fmt.Errorf("seed %s: %w", key, err)
			}
			points = append(points, benchkit.SweepPoint{Label: size.label, Case: b.getCase("Get "+size.label, 1, 0, []string{key})})
		}
		if err := sweep("Get at concurrency 1: p50 vs value size", "value", points, benchkit.P50, benchkit.Throughput); err != nil {
			return err
		}
	}
	if f.Sweep("mget") {
		var points []benchkit.SweepPoint
		for _, n := range []int{10, 100, 1000} {
			points = append(points, benchkit.SweepPoint{Label: strconv.Itoa(n), Case: b.mgetCase(n, 1)})
		}
		if err := sweep("MGet of 1 KiB values at concurrency 1: batch size", "keys", points, benchkit.P50, benchkit.Throughput); err != nil {
			return err
		}
	}
	return nil
}

// filled is n bytes of a repeating pattern.
func filled(n int) []byte {
	v := make([]byte, n)
	for i := range v {
		v[i] = byte('a' + i%26)
	}
	return v
}

// runSecurity seeds one key and measures its Get in the three security modes.
func runSecurity(duration, warmup time.Duration, inProcess bool) error {
	addr := redisAddr()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	direct := newRedis(addr, 10)
	defer func() { _ = direct.Close() }()
	if err := direct.Set(ctx, redisKey("security"), filled(1024), 0).Err(); err != nil {
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
