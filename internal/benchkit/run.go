package benchkit

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// The sides a case is measured on. Every ratio the tables print is plugin ÷ direct or
// plugin ÷ floor; a case may add sides of other names, printed without ratios.
const (
	// Direct is the backend's own client called from the benchmark: no gRPC at all.
	Direct = "direct"
	// Floor is a bare grpc-go server (no interceptors) whose handler makes the same backend
	// round trip as Direct: what any gRPC service in front of the backend costs at least.
	Floor = "floor"
	// Plugin is the plugin under test.
	Plugin = "plugin"
)

// Side is one way of making a case's call.
type Side struct {
	// Name is Direct, Floor, Plugin or a name of the benchmark's own.
	Name string
	// Op is one call, run in a closed loop (or an open loop when the case has a Rate).
	Op Op
	// Run, when set, replaces Op: it runs one whole slice of about d (a stream kept full, a
	// topic read to its end) and returns its sample.
	Run func(ctx context.Context, d time.Duration) (Sample, error)
	// Server is the process serving this side, whose CPU time is charged to it; nil for the
	// direct client.
	Server *Server
}

// Case is one benchmarked call measured on several sides in alternating slices.
type Case struct {
	// Name labels the case, e.g. "Get 1KiB".
	Name string
	// Conc is how many goroutines call in the closed loop.
	Conc int
	// Rate, when positive, makes the case open-loop: calls arrive at this many per second
	// whatever the answers' speed (see OpenLoop), and Conc only labels the case.
	Rate float64
	// PerOp is how many operations one call stands for (records of a batch, keys of an
	// MGet); 0 means 1. Throughput and CPU time are per operation, latency per call.
	PerOp int
	// Unit names the operations, e.g. "keys" or "records"; "calls" when empty.
	Unit string
	// Slices is how many alternating slices each repeat is split into; 0 means Rounds.
	Slices int
	// NoWarmup skips the warmup, for sides whose Run does a fixed amount of work.
	NoWarmup bool
	// Sides are measured in turn, slice by slice.
	Sides []Side
}

// Config is how long and how often each case is measured.
type Config struct {
	// Warmup is run, unmeasured, on each side before the first repeat.
	Warmup time.Duration
	// Duration is the measured time per side per repeat, split into slices.
	Duration time.Duration
	// Calls, when positive, is the number of calls per side per repeat, instead of Duration.
	Calls int
	// Repeats is how many times each case is measured; tables print the median and the spread.
	Repeats int
}

// Measure is one side's numbers in one repeat of a case.
type Measure struct {
	Result
	// Ops is how many operations were measured.
	Ops int
	// ServerCPU is the CPU time per operation of the side's server process, when HasServer;
	// ClientCPU that of this process (the benchmark's client, and an in-process plugin).
	ServerCPU, ClientCPU time.Duration
	// HasServer is false for the direct client and for a server in this process.
	HasServer bool
	// LagP50 and LagP99 are, in an open loop, the percentiles of how late calls started after
	// their due time (see Sample.Lag); zero in a closed loop.
	LagP50, LagP99 time.Duration
}

// TotalCPU is the CPU time per operation of client and server together.
func (m Measure) TotalCPU() time.Duration { return m.ServerCPU + m.ClientCPU }

// CaseResult holds every repeat of every side of a case.
type CaseResult struct {
	// Name, Conc, Rate, PerOp and Unit are the case's.
	Name  string
	Conc  int
	Rate  float64
	PerOp int
	Unit  string
	// Sides are the sides' names, in the case's order.
	Sides []string
	// Runs[i][r] is side i in repeat r.
	Runs [][]Measure
}

// Side is the repeats of the named side, or nil when the case has no such side.
func (r CaseResult) Side(name string) []Measure {
	for i, n := range r.Sides {
		if n == name {
			return r.Runs[i]
		}
	}
	return nil
}

// MaxRate is the closed-loop call rate of the slowest side (median over repeats), the basis
// for open-loop rates every side can sustain.
func (r CaseResult) MaxRate() float64 {
	rate := 0.0
	for i := range r.Sides {
		s := statOf(r.Runs[i], func(m Measure) (float64, bool) { return m.Throughput, true })
		if calls := s.Mid / float64(max(r.PerOp, 1)); rate == 0 || calls < rate {
			rate = calls
		}
	}
	return rate
}

// Run measures c with cfg: a warmup on each side, then cfg.Repeats repeats, each split into
// slices taken on every side in turn (the order rotating), reading the CPU time of this process
// and of the side's server before and after every slice. It fails only when a call fails.
func Run(ctx context.Context, cfg Config, c Case) (CaseResult, error) {
	nSlices := c.Slices
	if nSlices <= 0 {
		nSlices = Rounds
	}
	repeats := max(cfg.Repeats, 1)
	res := CaseResult{Name: c.Name, Conc: c.Conc, Rate: c.Rate, PerOp: max(c.PerOp, 1), Unit: c.Unit, Runs: make([][]Measure, len(c.Sides))}
	if res.Unit == "" {
		res.Unit = "calls"
	}
	for _, s := range c.Sides {
		res.Sides = append(res.Sides, s.Name)
	}
	if !c.NoWarmup && cfg.Warmup > 0 {
		for _, s := range c.Sides {
			if _, err := runSlice(ctx, c, s, cfg.Warmup, 0); err != nil {
				return res, fmt.Errorf("%s warmup: %w", s.Name, err)
			}
		}
	}
	for rep := range repeats {
		samples := make([]Sample, len(c.Sides))
		serverCPU := make([]time.Duration, len(c.Sides))
		clientCPU := make([]time.Duration, len(c.Sides))
		hasServer := make([]bool, len(c.Sides))
		for slice := range nSlices {
			for k := range c.Sides {
				i := (k + slice + rep) % len(c.Sides)
				s := c.Sides[i]
				srv0, okSrv, err := s.Server.CPU()
				if err != nil {
					return res, err
				}
				cli0, err := SelfCPU()
				if err != nil {
					return res, err
				}
				calls := 0
				if cfg.Calls > 0 {
					calls = max(cfg.Calls/nSlices, 1)
				}
				smp, err := runSlice(ctx, c, s, cfg.Duration/time.Duration(nSlices), calls)
				if err != nil {
					return res, fmt.Errorf("%s: %w", s.Name, err)
				}
				cli1, err := SelfCPU()
				if err != nil {
					return res, err
				}
				srv1, _, err := s.Server.CPU()
				if err != nil {
					return res, err
				}
				samples[i].Merge(smp)
				clientCPU[i] += cli1 - cli0
				serverCPU[i] += srv1 - srv0
				hasServer[i] = okSrv
			}
		}
		for i := range c.Sides {
			ops := samples[i].Count(res.PerOp)
			m := Measure{Result: samples[i].Result(res.PerOp), Ops: ops, HasServer: hasServer[i]}
			if lag := samples[i].Lag; len(lag) > 0 {
				slices.Sort(lag)
				m.LagP50, m.LagP99 = lag[len(lag)/2], lag[len(lag)*99/100]
			}
			if ops > 0 {
				m.ClientCPU = clientCPU[i] / time.Duration(ops)
				if m.HasServer {
					m.ServerCPU = serverCPU[i] / time.Duration(ops)
				}
			}
			res.Runs[i] = append(res.Runs[i], m)
		}
	}
	return res, nil
}

// runSlice runs one slice of side s of case c for d (or calls calls, when positive).
func runSlice(ctx context.Context, c Case, s Side, d time.Duration, calls int) (Sample, error) {
	switch {
	case s.Run != nil:
		return s.Run(ctx, d)
	case c.Rate > 0:
		return OpenLoop(ctx, s.Op, c.Rate, d, calls)
	default:
		return LoopCalls(ctx, s.Op, c.Conc, d, calls)
	}
}
