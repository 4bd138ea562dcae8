// Package benchkit is the harness the plugin benchmarks (postgres/bench, kafka/bench,
// redis/bench) share: closed-loop load from a number of goroutines, latency samples and their
// percentiles, plugin-versus-direct comparisons, and starting the plugin under test in this
// process or in one of its own. It measures and reports; it never judges the numbers.
package benchkit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Rounds is how many alternating direct/plugin slices Compare splits a case into, so load from
// elsewhere on the machine falls on both sides alike.
const Rounds = 4

// Op is one call of a benchmarked operation; i is the call's index, unique across the workers of
// one Loop (worker w makes calls w, w+conc, w+2*conc, ...).
type Op func(ctx context.Context, i int) error

// Result summarizes one side of a case: operations per second and median and 99th-percentile
// latency.
type Result struct {
	Throughput float64
	P50, P99   time.Duration
}

// Sample holds the latencies of measured calls and the wall time they took, possibly gathered
// over several slices.
type Sample struct {
	Lat     []time.Duration
	Elapsed time.Duration
}

// Merge adds another slice's latencies and elapsed time to s.
func (s *Sample) Merge(o Sample) {
	s.Lat = append(s.Lat, o.Lat...)
	s.Elapsed += o.Elapsed
}

// Result summarizes the sample, in which each latency stands for perOp operations (records of a
// batch, say). It sorts s.Lat.
func (s *Sample) Result(perOp int) Result {
	slices.Sort(s.Lat)
	if len(s.Lat) == 0 {
		return Result{}
	}
	return Result{
		Throughput: float64(len(s.Lat)*perOp) / s.Elapsed.Seconds(),
		P50:        s.Lat[len(s.Lat)/2],
		P99:        s.Lat[len(s.Lat)*99/100],
	}
}

// Ratio is a/b, or 0 when b is 0, for throughput ratios that must print as a number.
func Ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// Loop calls op from conc goroutines in a closed loop for d and records every call's latency.
// The first error a worker meets stops that worker; Loop returns all of them joined.
func Loop(ctx context.Context, op Op, conc int, d time.Duration) (Sample, error) {
	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	errs := make([]error, conc)
	lat := make([][]time.Duration, conc)
	for w := range conc {
		wg.Go(func() {
			local := make([]time.Duration, 0, 1<<14)
			for i := w; ; i += conc {
				t0 := time.Now()
				if t0.After(end) {
					break
				}
				if err := op(ctx, i); err != nil {
					errs[w] = err
					return
				}
				local = append(local, time.Since(t0))
			}
			lat[w] = local
		})
	}
	wg.Wait()
	s := Sample{Elapsed: time.Since(start)}
	for _, l := range lat {
		s.Lat = append(s.Lat, l...)
	}
	return s, errors.Join(errs...)
}

// Compare runs direct and plugin from conc goroutines each in a closed loop: warmup unmeasured
// (half per side), then Rounds alternating slices adding up to duration per side, measured.
func Compare(ctx context.Context, direct, plugin Op, conc int, warmup, duration time.Duration) (Result, Result, error) {
	if _, err := Loop(ctx, direct, conc, warmup/2); err != nil {
		return Result{}, Result{}, fmt.Errorf("direct: %w", err)
	}
	if _, err := Loop(ctx, plugin, conc, warmup/2); err != nil {
		return Result{}, Result{}, fmt.Errorf("plugin: %w", err)
	}
	var d, p Sample
	for range Rounds {
		ds, err := Loop(ctx, direct, conc, duration/Rounds)
		if err != nil {
			return Result{}, Result{}, fmt.Errorf("direct: %w", err)
		}
		ps, err := Loop(ctx, plugin, conc, duration/Rounds)
		if err != nil {
			return Result{}, Result{}, fmt.Errorf("plugin: %w", err)
		}
		d.Merge(ds)
		p.Merge(ps)
	}
	return d.Result(1), p.Result(1), nil
}

// Micros formats d as whole microseconds, rounded, for the benchmark tables: "123us".
func Micros(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Microsecond), 'f', 0, 64) + "us"
}

// LoadAverage is the machine's 1-minute load average, to read the numbers against, or
// "unknown".
func LoadAverage() string {
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

// StartCPUProfile writes a CPU profile of this process to path until the returned stop is
// called; stop may be called more than once. An empty path profiles nothing. A "%p" in path
// becomes the process id, so the several plugin processes of a security case write a file each.
func StartCPUProfile(path string) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	path = strings.ReplaceAll(path, "%p", strconv.Itoa(os.Getpid()))
	f, err := os.Create(path) //nolint:gosec // the operator names the profile file
	if err != nil {
		return nil, fmt.Errorf("create cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("start cpu profile: %w", err)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			pprof.StopCPUProfile()
			_ = f.Close()
		})
	}, nil
}
