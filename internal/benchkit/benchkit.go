// Package benchkit is the harness the plugin benchmarks (postgres/bench, kafka/bench,
// redis/bench) share: closed-loop and open-loop load, latency samples and their percentiles,
// the CPU time each process spends per operation, cases measured side by side on the direct
// client, the plugin and the floor (a bare grpc-go server doing the same backend round trip)
// with repeats and their spread, the tables that print them (aligned or as Markdown), and
// starting the plugin and the floor in processes of their own. It measures and reports; it
// never judges the numbers.
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

// Rounds is how many alternating slices Run splits each repeat of a case into (one slice per
// side in turn), so load from elsewhere on the machine falls on every side alike.
const Rounds = 4

// Op is one call of a benchmarked operation; i is the call's index, unique within one Loop or
// OpenLoop (in Loop, worker w makes calls w, w+conc, w+2*conc, ...). Ops are called from many
// goroutines at once, so they must not keep per-worker state keyed on i.
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
	// Ops, when not zero, is the number of operations done, for runs whose operations are not
	// one per latency (a consumer reading a topic); otherwise each latency counts perOp.
	Ops int
	// Lag holds, for an open loop, how late each call started after its due time: the
	// harness's own share of the latencies (waking a worker), plus any wait for a free one.
	Lag []time.Duration
}

// Merge adds another slice's latencies, operations and elapsed time to s.
func (s *Sample) Merge(o Sample) {
	s.Lat = append(s.Lat, o.Lat...)
	s.Lag = append(s.Lag, o.Lag...)
	s.Elapsed += o.Elapsed
	s.Ops += o.Ops
}

// Count is the number of operations in the sample: Ops when set, else perOp per latency.
func (s *Sample) Count(perOp int) int {
	if s.Ops > 0 {
		return s.Ops
	}
	return len(s.Lat) * max(perOp, 1)
}

// Result summarizes the sample, in which each latency stands for perOp operations (records of a
// batch, say). It sorts s.Lat. A sample with operations but no latencies has only a throughput.
func (s *Sample) Result(perOp int) Result {
	slices.Sort(s.Lat)
	n := s.Count(perOp)
	if n == 0 || s.Elapsed <= 0 {
		return Result{}
	}
	r := Result{Throughput: float64(n) / s.Elapsed.Seconds()}
	if len(s.Lat) > 0 {
		r.P50 = s.Lat[len(s.Lat)/2]
		r.P99 = s.Lat[len(s.Lat)*99/100]
	}
	return r
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
	return LoopCalls(ctx, op, conc, d, 0)
}

// LoopCalls is Loop that, when calls > 0, makes exactly that many calls in all instead of
// running for d, so a caller can divide the CPU time of a fixed number of calls.
func LoopCalls(ctx context.Context, op Op, conc int, d time.Duration, calls int) (Sample, error) {
	conc = max(conc, 1)
	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	errs := make([]error, conc)
	lat := make([][]time.Duration, conc)
	for w := range conc {
		wg.Go(func() {
			local := make([]time.Duration, 0, 1<<12)
			for i := w; calls <= 0 || i < calls; i += conc {
				t0 := time.Now()
				if calls <= 0 && t0.After(end) {
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
