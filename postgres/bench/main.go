// Command bench measures the postgres plugin against the same work done directly and against
// the floor, on a database of its own: Get and Put of one 1 KiB item on a random record at
// concurrency 1 and 32, then Get at fixed arrival rates (open loop, 50 % and 80 % of the slowest
// side's maximum at concurrency 32). Direct is the plugin's own Store (the same SQL) on a pgx
// pool of the same size, no gRPC; the floor is a bare grpc-go server (no interceptors) serving
// the same KeyValue messages whose handlers run one minimal SQL statement each. The plugin and
// the floor run in processes of their own (this binary run again), so the CPU time per
// operation of each is read from /proc/<pid>/stat; the benchmark's own from getrusage. Each case
// is repeated (-repeat) and printed as median ± half the range, with plugin ÷ direct and
// plugin ÷ floor for throughput, p50, p99 and CPU/op. It never fails on the numbers (it exits
// non-zero only if it cannot run).
//
// Scaling sweeps are opt-in (-sweep conc,size,scan or all): Get throughput at concurrency 1, 4,
// 16, 64 and 256; Get p50 for 1 KiB, 64 KiB and 1 MiB items; Scan pages of 10, 100 and 1000
// items (-scan-pages and -sizes pick other points; both sweeps print CPU per item or call too).
// -markdown prints every table as Markdown for the README; -raw adds a raw-pgx side (one
// minimal statement, no gRPC).
//
// It ends with the security case (benchkit.RunSecurity): Get at concurrency 1 against plaintext,
// mTLS, and mTLS + one policy + audit to a file; -security runs only that case.
//
//	go run ./postgres/bench [-duration 1s] [-repeat 3] [-records 1000] [-sweep all] [-markdown] [-only Get]
//	    [-scan-pages 1000] [-sizes 1024] [-plugin-cpuprofile plugin.prof]
//
// The database comes from PRISM_TEST_POSTGRES_URL (default: the `make services` PostgreSQL);
// the benchmark creates its own database there and drops it at the end.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"runtime"
	"runtime/trace"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"google.golang.org/grpc"

	"github.com/prism-gateway/plugins/core"
	"github.com/prism-gateway/plugins/core/config"
	keyvaluev1 "github.com/prism-gateway/plugins/gen/prism/keyvalue/v1"
	"github.com/prism-gateway/plugins/internal/benchkit"
	"github.com/prism-gateway/plugins/postgres/postgreskv"
)

const (
	namespace = "bench"
	// sizeNamespace holds the size sweep's records, apart from the ones Scan pages through.
	sizeNamespace = "bench-size"
	// poolSize is the pgx pool of every side.
	poolSize = 32
	// rawSide is the optional side that runs the floor's minimal SQL without gRPC (-raw).
	rawSide = "raw-pgx"
)

// The sweeps -sweep accepts.
var sweepNames = []string{"conc", "size", "scan"}

// itemKey is the key of the one item every benchmark record holds.
var itemKey = []byte("item")

func main() {
	if code, ok := benchkit.Child(func() core.Plugin { return postgreskv.New() }, registerFloor); ok {
		os.Exit(code)
	}
	if err := run(); err != nil {
		_, _ = fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	f := benchkit.Register(flag.CommandLine, benchkit.Config{Duration: time.Second, Warmup: 300 * time.Millisecond, Repeats: 3}, sweepNames)
	records := flag.Int("records", 1000, "records preloaded (one 1 KiB item each); Scan pages of 1000 need at least 1000")
	traceFile := flag.String("trace", "", "write a runtime execution trace of the benchmark process to this file")
	execPath := flag.String("exec", "", "run this plugin binary (e.g. bin/postgres-plugin) as the plugin's process instead of this binary")
	only := flag.String("only", "", "run only the cases whose name starts with this (Get, Put)")
	conc := flag.Int("conc", 0, "run the main cases at only this concurrency (default: 1 and 32)")
	raw := flag.Bool("raw", false, "add a raw-pgx side: the floor's minimal SQL on a pgx pool, no gRPC")
	securityDuration := flag.Duration("security-duration", 5*time.Second, "measured time per mode in the security case (0: skip it)")
	securityOnly := flag.Bool("security", false, "run only the security case (plaintext vs mTLS vs mTLS+policy+audit)")
	var scanPages []int
	flag.Func("scan-pages", "page sizes of the scan sweep, comma-separated (default 10,100,1000)", func(v string) error {
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				return fmt.Errorf("page size %q: want a positive integer", f)
			}
			scanPages = append(scanPages, n)
		}
		return nil
	})
	var sizes []int
	flag.Func("sizes", "item sizes in KiB of the size sweep, comma-separated (default 1,64,1024)", func(v string) error {
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				return fmt.Errorf("item size %q: want a positive number of KiB", f)
			}
			sizes = append(sizes, n)
		}
		return nil
	})
	flag.Parse()
	if err := f.Validate(); err != nil {
		return err
	}
	if *records < 1 {
		return fmt.Errorf("-records: must be positive, got %d", *records)
	}
	stopProfile, err := benchkit.StartCPUProfile(f.CPUProfile)
	if err != nil {
		return err
	}
	defer stopProfile()
	if *traceFile != "" {
		tf, err := os.Create(*traceFile)
		if err != nil {
			return fmt.Errorf("create trace: %w", err)
		}
		defer func() { _ = tf.Close() }()
		if err := trace.Start(tf); err != nil {
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
	if *securityOnly {
		return runSecurity(ctx, dbURL, "", *securityDuration, f.Warmup)
	}

	b, err := start(ctx, f, dbURL, *execPath, *raw)
	if err != nil {
		return err
	}
	defer b.close()
	if err := b.preload(ctx, *records); err != nil {
		return err
	}
	where := "its own process"
	switch {
	case f.InProcess:
		where = "this process"
	case *execPath != "":
		where = "its own process (" + *execPath + ")"
	}
	fmt.Printf("postgres plugin vs direct Store vs floor (bare grpc-go + one minimal SQL statement): %d records of one\n"+
		"1 KiB item, %d CPUs, load average %s, plugin in %s, floor in its own process, pgx pool %d on every side;\n%s\n",
		*records, runtime.NumCPU(), benchkit.LoadAverage(), where, poolSize, f.Describe())

	want := func(name string) bool { return strings.HasPrefix(name, *only) }
	concs := []int{1, 32}
	if *conc != 0 {
		concs = []int{*conc}
	}
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
	for _, c := range concs {
		if want("Get 1KiB") {
			r, err := measure(b.getCase("Get 1KiB", c, 0, namespace, b.ids))
			if err != nil {
				return err
			}
			if openBasis == nil || c > openBasis.Conc {
				openBasis = &r
			}
		}
		if want("Put 1KiB") {
			if _, err := measure(b.putCase(c)); err != nil {
				return err
			}
		}
	}
	if openBasis != nil {
		for _, c := range f.OpenCases(*openBasis, func(rate float64, label string) benchkit.Case {
			return b.getCase("Get 1KiB open "+label, openBasis.Conc, rate, namespace, b.ids)
		}) {
			if _, err := measure(c); err != nil {
				return err
			}
		}
	}
	if err := benchkit.CaseTable("", results).Write(os.Stdout, f.Markdown); err != nil {
		return err
	}
	if openBasis != nil && len(f.OpenRates) > 0 {
		fmt.Printf("\nOpen-loop rows: calls arrive at the rate shown (%v of the slowest side's maximum at concurrency %d), up to %d in\n"+
			"flight; latency counts from each call's scheduled time, so queueing shows (client CPU includes the harness's scheduling).\n", f.OpenRates, openBasis.Conc, benchkit.OpenWorkers)
	}
	fmt.Println("targets: plugin CPU/op <= 1.2x floor; p50 at conc 1 <= 1.2x floor; throughput at 32 >= 0.9x floor; Scan-1000 >= 0.7x direct")
	if len(scanPages) > 0 {
		b.scanPages = scanPages
	}
	if len(sizes) > 0 {
		b.sizesKiB = sizes
	}
	if err := b.sweeps(ctx, f); err != nil {
		return err
	}
	if *securityDuration <= 0 {
		return nil
	}
	return runSecurity(ctx, dbURL, b.ids[0], *securityDuration, f.Warmup)
}

// bench holds the sides' clients and the preloaded records.
type bench struct {
	pool          *pgxpool.Pool
	store         *postgreskv.Store
	plugin, floor *benchkit.Server
	raw           bool
	value         []byte
	ids           []string
	// scanPages and sizesKiB are the points of the scan and size sweeps.
	scanPages []int
	sizesKiB  []int
}

// start runs the plugin and the floor and opens the direct side's pool.
func start(ctx context.Context, f *benchkit.Flags, dbURL, execPath string, raw bool) (*bench, error) {
	b := &bench{raw: raw, scanPages: []int{10, 100, 1000}, sizesKiB: []int{1, 64, 1024}}
	var err error
	b.plugin, err = benchkit.StartPluginServer(ctx, benchkit.PluginSpec{
		New:        func() core.Plugin { return postgreskv.New() },
		Env:        pluginEnv(dbURL),
		Service:    keyvaluev1.KeyValueService_ServiceDesc.ServiceName,
		InProcess:  f.InProcess,
		Exec:       execPath,
		CPUProfile: f.PluginCPUProfile,
		Timeout:    30 * time.Second,
		Backend:    "PostgreSQL",
	})
	if err != nil {
		return nil, err
	}
	// The plugin has migrated the database by now; the floor and the direct path reuse its schema.
	b.floor, err = benchkit.StartFloor(ctx, f.FloorSpec(benchkit.FloorSpec{
		Env:     map[string]string{floorURLEnv: dbURL, floorPoolEnv: strconv.Itoa(poolSize)},
		Service: keyvaluev1.KeyValueService_ServiceDesc.ServiceName,
		Timeout: 30 * time.Second,
		Backend: "PostgreSQL",
	}))
	if err != nil {
		b.close()
		return nil, err
	}
	if b.pool, err = newPool(ctx, dbURL, poolSize); err != nil {
		b.close()
		return nil, err
	}
	key, err := postgreskv.Migrate(ctx, b.pool)
	if err != nil {
		b.close()
		return nil, err
	}
	b.store = postgreskv.NewStore(b.pool, key, func() time.Duration { return 24 * time.Hour })
	return b, nil
}

func (b *bench) close() {
	if b.pool != nil {
		b.pool.Close()
	}
	b.floor.Close()
	b.plugin.Close()
}

func pluginEnv(dbURL string) map[string]string {
	return map[string]string{
		"DATABASE_URL":          dbURL,
		"POSTGRES_POOL_SIZE":    strconv.Itoa(poolSize),
		"PRISM_METRICS_ENABLED": "false",
		"PRISM_LOG_LEVEL":       "warn",
	}
}

func newPool(ctx context.Context, dbURL string, size int) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	pc.MaxConns = int32(size)
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	return pool, nil
}

// preload writes n records of one 1 KiB item.
func (b *bench) preload(ctx context.Context, n int) error {
	b.value = make([]byte, 1024)
	_, _ = rand.Read(b.value)
	b.ids = make([]string, n)
	for i := range b.ids {
		b.ids[i] = fmt.Sprintf("record-%06d", i)
		if _, err := b.store.Put(ctx, postgreskv.PutRequest{Namespace: namespace, ID: b.ids[i], Items: []postgreskv.PutItem{{Key: itemKey, Value: b.value}}}); err != nil {
			return fmt.Errorf("preload: %w", err)
		}
	}
	return nil
}

// pick spreads call i over n records: a fixed permutation-like walk, the same on every side and
// safe to compute from any goroutine.
func pick(i, n int) int { return int((uint64(i) * 2654435761) % uint64(n)) }

// side is one side's calls.
type side struct {
	name   string
	server *benchkit.Server
	get    func(ctx context.Context, ns, id string) error
	put    func(ctx context.Context, id string, value []byte) error
	scan   func(ctx context.Context, pageSize int) error
}

func (b *bench) sides() []side {
	sides := []side{{
		name: benchkit.Direct,
		get: func(ctx context.Context, ns, id string) error {
			items, _, err := b.store.Get(ctx, postgreskv.GetRequest{Namespace: ns, ID: id, Keys: [][]byte{itemKey}, PageSize: 100, MaxBytes: 2 << 20, MaxItemBytes: 1024 + 1<<20})
			if err == nil && len(items) != 1 {
				err = fmt.Errorf("record %s: got %d items, want 1", id, len(items))
			}
			return err
		},
		put: func(ctx context.Context, id string, value []byte) error {
			_, err := b.store.Put(ctx, postgreskv.PutRequest{Namespace: namespace, ID: id, Items: []postgreskv.PutItem{{Key: itemKey, Value: value}}})
			return err
		},
		scan: func(ctx context.Context, pageSize int) error {
			recs, _, err := b.store.Scan(ctx, postgreskv.ScanRequest{Namespace: namespace, PageSize: pageSize, MaxBytes: 2 << 20})
			if err == nil && len(recs) != min(pageSize, len(b.ids)) {
				err = fmt.Errorf("scan page of %d: got %d records", pageSize, len(recs))
			}
			return err
		},
	}}
	for _, s := range []struct {
		name string
		srv  *benchkit.Server
	}{{benchkit.Floor, b.floor}, {benchkit.Plugin, b.plugin}} {
		client := keyvaluev1.NewKeyValueServiceClient(s.srv.Conn)
		sides = append(sides, side{
			name:   s.name,
			server: s.srv,
			get: func(ctx context.Context, ns, id string) error {
				resp, err := client.Get(ctx, &keyvaluev1.GetRequest{Namespace: ns, Id: id, Keys: [][]byte{itemKey}})
				if err == nil && len(resp.GetItems()) != 1 {
					err = fmt.Errorf("record %s: got %d items, want 1", id, len(resp.GetItems()))
				}
				return err
			},
			put: func(ctx context.Context, id string, value []byte) error {
				_, err := client.Put(ctx, &keyvaluev1.PutRequest{Namespace: namespace, Id: id, Items: []*keyvaluev1.PutItem{{Key: itemKey, Value: value}}})
				return err
			},
			scan: func(ctx context.Context, pageSize int) error {
				resp, err := client.Scan(ctx, &keyvaluev1.ScanRequest{Namespace: namespace, PageSize: int32(pageSize)})
				if err == nil && len(resp.GetRecords()) != min(pageSize, len(b.ids)) {
					err = fmt.Errorf("scan page of %d: got %d records", pageSize, len(resp.GetRecords()))
				}
				return err
			},
		})
	}
	if b.raw {
		sides = append(sides, side{
			name: rawSide,
			get: func(ctx context.Context, ns, id string) error {
				_, err := floorGet(ctx, b.pool, ns, id, [][]byte{itemKey})
				return err
			},
			put: func(ctx context.Context, id string, value []byte) error {
				_, err := floorPut(ctx, b.pool, namespace, id, []*keyvaluev1.PutItem{{Key: itemKey, Value: value}})
				return err
			},
			scan: func(ctx context.Context, pageSize int) error {
				_, err := floorScan(ctx, b.pool, namespace, pageSize)
				return err
			},
		})
	}
	return sides
}

// getCase is Get of one item of the records ids in namespace ns, at conc (or at rate calls per
// second, open loop).
func (b *bench) getCase(name string, conc int, rate float64, ns string, ids []string) benchkit.Case {
	c := benchkit.Case{Name: name, Conc: conc, Rate: rate}
	for _, s := range b.sides() {
		c.Sides = append(c.Sides, benchkit.Side{Name: s.name, Server: s.server, Op: func(ctx context.Context, i int) error {
			return s.get(ctx, ns, ids[pick(i, len(ids))])
		}})
	}
	return c
}

func (b *bench) putCase(conc int) benchkit.Case {
	c := benchkit.Case{Name: "Put 1KiB", Conc: conc}
	for _, s := range b.sides() {
		c.Sides = append(c.Sides, benchkit.Side{Name: s.name, Server: s.server, Op: func(ctx context.Context, i int) error {
			return s.put(ctx, b.ids[pick(i, len(b.ids))], b.value)
		}})
	}
	return c
}

// scanCase is the first Scan page of pageSize items; throughput and CPU count items.
func (b *bench) scanCase(pageSize, conc int) benchkit.Case {
	c := benchkit.Case{Name: fmt.Sprintf("Scan %d", pageSize), Conc: conc, PerOp: min(pageSize, len(b.ids)), Unit: "items"}
	for _, s := range b.sides() {
		c.Sides = append(c.Sides, benchkit.Side{Name: s.name, Server: s.server, Op: func(ctx context.Context, _ int) error {
			return s.scan(ctx, pageSize)
		}})
	}
	return c
}

// sweeps runs the scaling sweeps asked for and prints a table for each.
func (b *bench) sweeps(ctx context.Context, f *benchkit.Flags) error {
	sweep := func(title, param string, points []benchkit.SweepPoint, metrics ...benchkit.Metric) error {
		return benchkit.RunSweep(ctx, f.Config, os.Stdout, f.Markdown, title, param, points, metrics...)
	}
	if f.Sweep("conc") {
		var points []benchkit.SweepPoint
		for _, conc := range []int{1, 4, 16, 64, 256} {
			points = append(points, benchkit.SweepPoint{Label: strconv.Itoa(conc), Case: b.getCase("Get 1KiB", conc, 0, namespace, b.ids)})
		}
		if err := sweep("Get 1 KiB: throughput vs concurrency", "concurrency", points, benchkit.Throughput, benchkit.P50); err != nil {
			return err
		}
	}
	if f.Sweep("size") {
		var points []benchkit.SweepPoint
		for _, kib := range b.sizesKiB {
			size := struct {
				label string
				n     int
			}{strconv.Itoa(kib) + " KiB", kib << 10}
			if kib%1024 == 0 {
				size.label = strconv.Itoa(kib/1024) + " MiB"
			}
			id := "size-" + strconv.Itoa(size.n)
			v := make([]byte, size.n)
			_, _ = rand.Read(v)
			if _, err := b.store.Put(ctx, postgreskv.PutRequest{Namespace: sizeNamespace, ID: id, Items: []postgreskv.PutItem{{Key: itemKey, Value: v}}}); err != nil {
				return fmt.Errorf("preload %s: %w", id, err)
			}
			points = append(points, benchkit.SweepPoint{Label: size.label, Case: b.getCase("Get "+size.label, 1, 0, sizeNamespace, []string{id})})
		}
		if err := sweep("Get at concurrency 1: p50 vs item size", "item", points, benchkit.P50, benchkit.Throughput, benchkit.ServerCPU, benchkit.ClientCPU); err != nil {
			return err
		}
	}
	if f.Sweep("scan") {
		var points []benchkit.SweepPoint
		for _, n := range b.scanPages {
			points = append(points, benchkit.SweepPoint{Label: strconv.Itoa(n), Case: b.scanCase(n, 1)})
		}
		if err := sweep("Scan of 1 KiB items at concurrency 1: page size (CPU per item)", "page", points, benchkit.P50, benchkit.Throughput, benchkit.ServerCPU, benchkit.ClientCPU); err != nil {
			return err
		}
	}
	return nil
}

// runSecurity measures the Get of one preloaded record (id, or a record it writes when empty)
// in the three security modes, each plugin in this process as before.
func runSecurity(ctx context.Context, dbURL, id string, duration, warmup time.Duration) error {
	if duration <= 0 {
		return errors.New("-security-duration: must be positive with -security")
	}
	if id == "" {
		pool, err := newPool(ctx, dbURL, 2)
		if err != nil {
			return err
		}
		defer pool.Close()
		key, err := postgreskv.Migrate(ctx, pool)
		if err != nil {
			return err
		}
		id = "record-security"
		store := postgreskv.NewStore(pool, key, func() time.Duration { return time.Hour })
		if _, err := store.Put(ctx, postgreskv.PutRequest{Namespace: namespace, ID: id, Items: []postgreskv.PutItem{{Key: itemKey, Value: make([]byte, 1024)}}}); err != nil {
			return fmt.Errorf("preload: %w", err)
		}
	}
	return benchkit.RunSecurity(ctx, os.Stdout, benchkit.SecuritySpec{
		Plugin: benchkit.PluginSpec{
			New:       func() core.Plugin { return postgreskv.New() },
			Env:       pluginEnv(dbURL),
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
				_, err := client.Get(ctx, &keyvaluev1.GetRequest{Namespace: namespace, Id: id, Keys: [][]byte{itemKey}})
				return err
			}
		},
		Duration: duration,
		Warmup:   warmup,
	})
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
