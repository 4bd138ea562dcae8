// Command bench measures what the postgres plugin adds on top of PostgreSQL: Get and Put of
// 1 KiB values through the plugin (gRPC, in-process server) and through the same Store code
// and SQL called directly on a pgx pool, at concurrency 1 and 32. It prints p50/p99 latency,
// throughput and the plugin ÷ direct ratios. It reports; it never fails on a missed target.
//
// It ends with the security case (benchkit.RunSecurity): Get at concurrency 1 against plaintext,
// mTLS, and mTLS + one policy + audit to a file; -security runs only that case.
//
//	go run ./postgres/bench [-duration 3s] [-records 1000] [-security]
//
// The database comes from PRISM_TEST_POSTGRES_URL (default: the `make services` PostgreSQL);
// the benchmark creates its own database there and drops it at the end.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"runtime/trace"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/prism-gateway/plugins/core"
	"github.com/prism-gateway/plugins/core/config"
	keyvaluev1 "github.com/prism-gateway/plugins/gen/prism/keyvalue/v1"
	"github.com/prism-gateway/plugins/internal/benchkit"
	"github.com/prism-gateway/plugins/postgres/postgreskv"
)

const namespace = "bench"

func main() {
	if err := run(); err != nil {
		_, _ = fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// result is one measured case; its sample's latencies are sorted.
type result struct {
	op, path string
	conc     int
	benchkit.Sample
}

func (r result) throughput() float64 { return float64(len(r.Lat)) / r.Elapsed.Seconds() }

// pct is the nearest-rank percentile p (0 < p <= 1) of the latencies.
func (r result) pct(p float64) time.Duration {
	if len(r.Lat) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(r.Lat)))) - 1
	return r.Lat[max(i, 0)]
}

func run() error {
	duration := flag.Duration("duration", 3*time.Second, "measuring time per case")
	warmup := flag.Duration("warmup", 500*time.Millisecond, "unmeasured time before each case")
	records := flag.Int("records", 1000, "records preloaded (one 1 KiB item each)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	traceFile := flag.String("trace", "", "write a runtime execution trace of the whole run to this file")
	execPath := flag.String("exec", "", "run this plugin binary (e.g. bin/postgres-plugin) as a separate process instead of in-process")
	conns := flag.Int("conns", 1, "gRPC client connections the workers share round-robin")
	only := flag.String("only", "", "run only cases whose op/conc/path contains this, e.g. get/32/plugin")
	securityDuration := flag.Duration("security-duration", 5*time.Second, "measured time per mode in the security case")
	securityOnly := flag.Bool("security", false, "run only the security case (plaintext vs mTLS vs mTLS+policy+audit)")
	flag.Parse()
	stopProfile, err := benchkit.StartCPUProfile(*cpuProfile)
	if err != nil {
		return err
	}
	defer stopProfile()
	if *traceFile != "" {
		f, err := os.Create(*traceFile)
		if err != nil {
			return fmt.Errorf("create trace: %w", err)
		}
		defer func() { _ = f.Close() }()
		if err := trace.Start(f); err != nil {
			return fmt.Errorf("start trace: %w", err)
		}
		defer trace.Stop()
	}

	base := os.Getenv("PRISM_TEST_POSTGRES_URL")
	if base == "" {
		base = "postgres://prism:prism@127.0.0.1:5432/prism" //nolint:gosec // the documented local test service
	}
	ctx := context.Background()
	dbURL, drop, err := createDatabase(ctx, base)
	if err != nil {
		return err
	}
	defer drop()

	const poolSize = 32
	var addr string
	if *execPath != "" {
		a, stopPlugin, err := execPlugin(ctx, *execPath, dbURL, poolSize)
		if err != nil {
			return err
		}
		defer stopPlugin()
		addr = a
	} else {
		srv, err := startPlugin(ctx, dbURL, poolSize)
		if err != nil {
			return err
		}
		serveCtx, stop := context.WithCancel(ctx)
		served := make(chan error, 1)
		go func() { served <- srv.Serve(serveCtx) }()
		defer func() {
			stop()
			if err := <-served; err != nil {
				_, _ = fmt.Fprintln(os.Stderr, "bench: plugin stopped with:", err)
			}
		}()
		addr = srv.Addr().String()
	}
	clients := make([]keyvaluev1.KeyValueServiceClient, max(*conns, 1))
	healths := make([]healthpb.HealthClient, len(clients))
	for i := range clients {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return fmt.Errorf("dial plugin: %w", err)
		}
		defer func() { _ = conn.Close() }()
		clients[i] = keyvaluev1.NewKeyValueServiceClient(conn)
		healths[i] = healthpb.NewHealthClient(conn)
		if err := waitReady(ctx, clients[i]); err != nil {
			return err
		}
	}
	var next atomic.Uint64
	client := func() keyvaluev1.KeyValueServiceClient { return clients[next.Add(1)%uint64(len(clients))] }
	health := func() healthpb.HealthClient { return healths[next.Add(1)%uint64(len(healths))] }

	pc, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return fmt.Errorf("parse database url: %w", err)
	}
	pc.MaxConns = poolSize
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer pool.Close()
	// The plugin has migrated the database by now; the direct path reuses its schema and key.
	key, err := postgreskv.Migrate(ctx, pool)
	if err != nil {
		return err
	}
	store := postgreskv.NewStore(pool, key, func() time.Duration { return 24 * time.Hour })

	value := make([]byte, 1024)
	_, _ = rand.Read(value)
	id := func(i int) string { return fmt.Sprintf("record-%06d", i) }
	for i := range *records {
		if _, err := store.Put(ctx, postgreskv.PutRequest{Namespace: namespace, ID: id(i), Items: []postgreskv.PutItem{{Key: []byte("item"), Value: value}}}); err != nil {
			return fmt.Errorf("preload: %w", err)
		}
	}

	type path struct {
		name string
		get  func(ctx context.Context, id string) error
		put  func(ctx context.Context, id string) error
	}
	paths := []path{
		{
			name: "plugin",
			get: func(ctx context.Context, id string) error {
				_, err := client().Get(ctx, &keyvaluev1.GetRequest{Namespace: namespace, Id: id, Keys: [][]byte{[]byte("item")}})
				return err
			},
			put: func(ctx context.Context, id string) error {
				_, err := client().Put(ctx, &keyvaluev1.PutRequest{Namespace: namespace, Id: id, Items: []*keyvaluev1.PutItem{{Key: []byte("item"), Value: value}}})
				return err
			},
		},
		{
			name: "direct",
			get: func(ctx context.Context, id string) error {
				_, _, err := store.Get(ctx, postgreskv.GetRequest{Namespace: namespace, ID: id, Keys: [][]byte{[]byte("item")}, PageSize: 100, MaxBytes: 2 << 20, MaxItemBytes: 1024 + 1<<20})
				return err
			},
			put: func(ctx context.Context, id string) error {
				_, err := store.Put(ctx, postgreskv.PutRequest{Namespace: namespace, ID: id, Items: []postgreskv.PutItem{{Key: []byte("item"), Value: value}}})
				return err
			},
		},
		{
			// A gRPC round trip to the same server that never touches the database: the floor
			// under "plugin" on this machine.
			name: "grpc-hop",
			get: func(ctx context.Context, _ string) error {
				_, err := health().Check(ctx, &healthpb.HealthCheckRequest{})
				return err
			},
			put: func(ctx context.Context, _ string) error {
				_, err := health().Check(ctx, &healthpb.HealthCheckRequest{})
				return err
			},
		},
		{
			// The simplest SQL that could answer: what our transactional and paging features cost.
			name: "raw-pgx",
			get: func(ctx context.Context, id string) error {
				var v []byte
				var ver int64
				return pool.QueryRow(ctx, `SELECT value, version FROM prism_kv_items WHERE namespace = $1 AND id = $2 AND key = $3`,
					namespace, []byte(id), []byte("item")).Scan(&v, &ver)
			},
			put: func(ctx context.Context, id string) error {
				var ver int64
				return pool.QueryRow(ctx, `INSERT INTO prism_kv_items (namespace, id, key, value, version) VALUES ($1, $2, $3, $4, nextval('prism_kv_version'))
ON CONFLICT (namespace, id, key) DO UPDATE SET value = EXCLUDED.value, version = EXCLUDED.version RETURNING version`,
					namespace, []byte(id), []byte("item"), value).Scan(&ver)
			},
		},
	}

	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("postgres plugin benchmark: 1 KiB values, %d records, %s per case, GOMAXPROCS=%d, pool %d, %d gRPC conns, load average %s\n",
		*records, *duration, runtime.GOMAXPROCS(0), poolSize, len(clients), strings.Join(strings.Fields(string(load))[:min(3, len(strings.Fields(string(load))))], " "))
	fmt.Println("paths: plugin = gRPC to the in-process plugin; direct = the plugin's Store (same SQL) on a pgx pool;")
	fmt.Println("       grpc-hop = a health check over the same gRPC connection (no database); raw-pgx = one minimal statement")
	fmt.Println()
	if *securityOnly {
		return runSecurity(ctx, dbURL, poolSize, id(0), *securityDuration, *warmup)
	}
	var results []result
	for _, op := range []string{"get", "put"} {
		for _, conc := range []int{1, 32} {
			for _, p := range paths {
				if !strings.Contains(fmt.Sprintf("%s/%d/%s", op, conc, p.name), *only) {
					continue
				}
				fn := p.get
				if op == "put" {
					fn = p.put
				}
				r, err := measure(ctx, fn, id, *records, conc, *warmup, *duration)
				if err != nil {
					return fmt.Errorf("%s %s c=%d: %w", p.name, op, conc, err)
				}
				r.op, r.path, r.conc = op, p.name, conc
				results = append(results, r)
			}
		}
	}
	report(os.Stdout, results)
	return runSecurity(ctx, dbURL, poolSize, id(0), *securityDuration, *warmup)
}

// runSecurity measures the Get of one preloaded record in the three security modes, each
// plugin in this process like the main cases.
func runSecurity(ctx context.Context, dbURL string, poolSize int, id string, duration, warmup time.Duration) error {
	return benchkit.RunSecurity(ctx, os.Stdout, benchkit.SecuritySpec{
		Plugin: benchkit.PluginSpec{
			New: func() core.Plugin { return postgreskv.New() },
			Env: map[string]string{
				"DATABASE_URL":          dbURL,
				"POSTGRES_POOL_SIZE":    fmt.Sprint(poolSize),
				"PRISM_METRICS_ENABLED": "false",
				"PRISM_LOG_LEVEL":       "warn",
			},
			Service:   keyvaluev1.KeyValueService_ServiceDesc.ServiceName,
			InProcess: true,
			Timeout:   15 * time.Second,
			Backend:   "PostgreSQL",
		},
		Name:      "KeyValue Get 1KiB",
		Namespace: namespace,
		Op: func(conn grpc.ClientConnInterface) benchkit.Op {
			client := keyvaluev1.NewKeyValueServiceClient(conn)
			return func(ctx context.Context, _ int) error {
				_, err := client.Get(ctx, &keyvaluev1.GetRequest{Namespace: namespace, Id: id, Keys: [][]byte{[]byte("item")}})
				return err
			}
		},
		Duration: duration,
		Warmup:   warmup,
	})
}

// measure runs fn from conc goroutines in a closed loop on records picked at random.
func measure(ctx context.Context, fn func(context.Context, string) error, id func(int) string, records, conc int, warmup, d time.Duration) (result, error) {
	// Worker w makes calls w, w+conc, ...: i%conc is the worker, so each has its own generator.
	rngs := make([]*mrand.Rand, conc)
	for w := range rngs {
		rngs[w] = mrand.New(mrand.NewPCG(uint64(w), uint64(time.Now().UnixNano()))) //nolint:gosec // load pattern
	}
	op := func(ctx context.Context, i int) error { return fn(ctx, id(rngs[i%conc].IntN(records))) }
	if _, err := benchkit.Loop(ctx, op, conc, warmup); err != nil {
		return result{}, err
	}
	sample, err := benchkit.Loop(ctx, op, conc, d)
	if err != nil {
		return result{}, err
	}
	slices.Sort(sample.Lat)
	return result{Sample: sample}, nil
}

func report(out io.Writer, results []result) {
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	_, _ = fmt.Fprintln(w, "op\tconc\tpath\tops/s\tp50\tp99\t")
	find := map[string]result{}
	for _, r := range results {
		find[fmt.Sprintf("%s/%d/%s", r.op, r.conc, r.path)] = r
		_, _ = fmt.Fprintf(w, "%s\t%d\t%s\t%.0f\t%s\t%s\t\n", r.op, r.conc, r.path, r.throughput(), us(r.pct(0.5)), us(r.pct(0.99)))
	}
	_ = w.Flush()
	_, _ = fmt.Fprintln(out, "\nplugin vs direct (same SQL on a pgx pool, no gRPC):")
	w = tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	_, _ = fmt.Fprintln(w, "op\tconc\tthroughput ratio\tp50 added\tp99 added\ttarget\t")
	for _, op := range []string{"get", "put"} {
		for _, conc := range []int{1, 32} {
			pl, okP := find[fmt.Sprintf("%s/%d/plugin", op, conc)]
			di, okD := find[fmt.Sprintf("%s/%d/direct", op, conc)]
			if !okP || !okD {
				continue
			}
			target := "p50 added <= 120µs"
			met := pl.pct(0.5)-di.pct(0.5) <= 120*time.Microsecond
			if conc > 1 {
				target = "ratio >= 0.70"
				met = benchkit.Ratio(pl.throughput(), di.throughput()) >= 0.7
			}
			verdict := "met"
			if !met {
				verdict = "MISSED"
			}
			_, _ = fmt.Fprintf(w, "%s\t%d\t%.2f\t%s\t%s\t%s: %s\t\n", op, conc, benchkit.Ratio(pl.throughput(), di.throughput()),
				us(pl.pct(0.5)-di.pct(0.5)), us(pl.pct(0.99)-di.pct(0.99)), target, verdict)
		}
	}
	_ = w.Flush()
}

func us(d time.Duration) string { return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond)) }

func startPlugin(ctx context.Context, dbURL string, poolSize int) (*core.Server, error) {
	env := map[string]string{
		"DATABASE_URL":             dbURL,
		"POSTGRES_POOL_SIZE":       fmt.Sprint(poolSize),
		"PRISM_CONTROL_PLANE_HOST": "127.0.0.1",
		"PRISM_CONTROL_PLANE_PORT": "0",
		"PRISM_METRICS_ENABLED":    "false",
		"PRISM_LOG_LEVEL":          "warn",
	}
	src := config.Source{LookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}
	srv, err := core.New(ctx, postgreskv.New(), core.Options{Source: src, LogOutput: io.Discard})
	if err != nil {
		return nil, fmt.Errorf("start plugin: %w", err)
	}
	return srv, nil
}

// execPlugin runs the plugin binary on a free loopback port, as it runs in production: its own
// process, its own Go runtime.
func execPlugin(ctx context.Context, path, dbURL string, poolSize int) (string, func(), error) {
	port, err := benchkit.FreePort()
	if err != nil {
		return "", nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", port)
	cmd := exec.CommandContext(ctx, path)
	cmd.Env = append(os.Environ(),
		"DATABASE_URL="+dbURL,
		fmt.Sprintf("POSTGRES_POOL_SIZE=%d", poolSize),
		"PRISM_CONTROL_PLANE_HOST=127.0.0.1",
		"PRISM_CONTROL_PLANE_PORT="+port,
		"PRISM_METRICS_ENABLED=false",
		"PRISM_LOG_LEVEL=warn",
		"PRISM_PLUGIN_CONFIG=/dev/null",
	)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("start %s: %w", path, err)
	}
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}
	return addr, stop, nil
}

func waitReady(ctx context.Context, c keyvaluev1.KeyValueServiceClient) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := c.Get(ctx, &keyvaluev1.GetRequest{Namespace: namespace, Id: "warmup"})
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("plugin not ready: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// createDatabase makes a database for this run next to base's and returns its URL.
func createDatabase(ctx context.Context, base string) (string, func(), error) {
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		return "", nil, fmt.Errorf("connect to %s: %w (run `make services` or set PRISM_TEST_POSTGRES_URL)", redact(base), err)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := "prism_kv_bench_" + hex.EncodeToString(b[:])
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		_ = admin.Close(ctx)
		return "", nil, fmt.Errorf("create benchmark database: %w", err)
	}
	u, err := url.Parse(base)
	if err != nil {
		return "", nil, fmt.Errorf("parse database url: %w", err)
	}
	u.Path = "/" + name
	drop := func() {
		ctx := context.WithoutCancel(ctx)
		if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			_, _ = fmt.Fprintln(os.Stderr, "bench: drop database:", err)
		}
		_ = admin.Close(ctx)
	}
	return u.String(), drop, nil
}

func redact(u string) string { return config.SecretURL(u).String() }
