package benchkit

import (
	"context"
	"errors"
	"flag"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
)

// TestMain lets the floor test start this test binary again as a floor process.
func TestMain(m *testing.M) {
	if code, ok := Child(nil, func(context.Context, *grpc.Server) (func(), error) { return func() {}, nil }); ok {
		os.Exit(code)
	}
	os.Exit(m.Run())
}

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		name    string
		line    string
		want    time.Duration
		wantErr string
	}{
		{
			name: "utime and stime are added and counted in 10 ms ticks",
			line: "1234 (prism) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 100 1000 10",
			want: 3 * time.Second,
		},
		{
			name: "a command name with spaces and parentheses does not shift the fields",
			line: "77 (a (b) c) R 1 77 77 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 5 10 1",
			want: 100 * time.Millisecond,
		},
		{name: "a line without a command name is an error", line: "77 R 1 2", wantErr: "no command name"},
		{name: "a short line is an error", line: "77 (x) R 1 2 3", wantErr: "fields after the command name"},
		{name: "a non-numeric cpu field is an error", line: "1 (x) S 1 1 1 0 -1 0 0 0 0 0 abc 1 0", wantErr: "cpu field"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatCPU(tt.line)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestProcessCPUAgreesWithGetrusage(t *testing.T) {
	// Burn some CPU so both counters are well above their resolution.
	deadline := time.Now().Add(150 * time.Millisecond)
	x := 0
	for time.Now().Before(deadline) {
		x++
	}
	self, err := SelfCPU()
	require.NoError(t, err)
	proc, err := ProcessCPU(os.Getpid())
	require.NoError(t, err)
	t.Logf("getrusage %s, /proc/self/stat %s after %d iterations", self, proc, x)
	assert.Positive(t, proc)
	assert.InDelta(t, float64(self), float64(proc), float64(100*time.Millisecond))
}

func TestLoopCallsMakesExactlyThatManyCalls(t *testing.T) {
	var mu sync.Mutex
	seen := map[int]int{}
	op := func(_ context.Context, i int) error {
		mu.Lock()
		seen[i]++
		mu.Unlock()
		return nil
	}
	s, err := LoopCalls(t.Context(), op, 3, time.Hour, 100)
	require.NoError(t, err)
	assert.Len(t, s.Lat, 100)
	assert.Len(t, seen, 100)
	for i := range 100 {
		assert.Equal(t, 1, seen[i], "call %d", i)
	}
}

func TestOpenLoop(t *testing.T) {
	t.Run("every scheduled call is made once and measured from its due time", func(t *testing.T) {
		var mu sync.Mutex
		seen := map[int]bool{}
		op := func(_ context.Context, i int) error {
			mu.Lock()
			seen[i] = true
			mu.Unlock()
			return nil
		}
		s, err := OpenLoop(t.Context(), op, 2000, 0, 50)
		require.NoError(t, err)
		assert.Len(t, s.Lat, 50)
		assert.Len(t, s.Lag, 50)
		assert.Len(t, seen, 50)
		// 50 calls at 2000/s are due over 24.5 ms, so the run cannot be shorter.
		assert.GreaterOrEqual(t, s.Elapsed, 24*time.Millisecond)
		r := s.Result(1)
		t.Logf("no-op at 2000/s: p50 %s p99 %s (the harness's own lag)", r.P50, r.P99)
	})
	t.Run("a duration schedules rate times duration calls", func(t *testing.T) {
		s, err := OpenLoop(t.Context(), func(context.Context, int) error { return nil }, 1000, 30*time.Millisecond, 0)
		require.NoError(t, err)
		assert.Len(t, s.Lat, 30)
	})
	t.Run("failed calls are reported and not measured", func(t *testing.T) {
		boom := errors.New("boom")
		s, err := OpenLoop(t.Context(), func(_ context.Context, i int) error {
			if i%2 == 0 {
				return boom
			}
			return nil
		}, 5000, 0, 20)
		require.ErrorIs(t, err, boom)
		assert.Len(t, s.Lat, 10)
	})
	t.Run("a rate of zero is refused", func(t *testing.T) {
		_, err := OpenLoop(t.Context(), func(context.Context, int) error { return nil }, 0, time.Second, 0)
		require.Error(t, err)
	})
}

func TestStatOf(t *testing.T) {
	tests := []struct {
		name       string
		xs         []float64
		want       Stat
		wantSpread float64
	}{
		{name: "nothing measured does not apply", xs: nil, want: Stat{}},
		{name: "one repeat has no spread", xs: []float64{5}, want: Stat{Mid: 5, Lo: 5, Hi: 5, N: 1}},
		{name: "an odd count takes the middle", xs: []float64{12, 8, 10}, want: Stat{Mid: 10, Lo: 8, Hi: 12, N: 3}, wantSpread: 0.2},
		{name: "an even count averages the two middles", xs: []float64{4, 1, 3, 2}, want: Stat{Mid: 2.5, Lo: 1, Hi: 4, N: 4}, wantSpread: 0.6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := StatOf(tt.xs)
			assert.Equal(t, tt.want, got)
			assert.InDelta(t, tt.wantSpread, got.Spread(), 1e-9)
		})
	}
}

func TestRunMeasuresEverySideInEveryRepeat(t *testing.T) {
	var mu sync.Mutex
	calls := map[string]int{}
	side := func(name string) Side {
		return Side{Name: name, Op: func(context.Context, int) error {
			mu.Lock()
			calls[name]++
			mu.Unlock()
			return nil
		}}
	}
	c := Case{Name: "echo", Conc: 2, PerOp: 10, Unit: "keys", Sides: []Side{side(Direct), side(Floor), side(Plugin)}}
	res, err := Run(t.Context(), Config{Calls: 40, Repeats: 3}, c)
	require.NoError(t, err)
	assert.Equal(t, []string{Direct, Floor, Plugin}, res.Sides)
	for i, name := range res.Sides {
		require.Len(t, res.Runs[i], 3, name)
		for _, m := range res.Runs[i] {
			assert.Equal(t, 400, m.Ops, "%s: 40 calls of 10 keys", name)
			assert.False(t, m.HasServer, "%s has no server process", name)
			assert.Positive(t, m.Throughput)
		}
		assert.Equal(t, 120, calls[name], "%s: 40 calls in each of 3 repeats", name)
	}
	assert.Positive(t, res.MaxRate())
}

func TestRunStopsAtAFailingCall(t *testing.T) {
	boom := errors.New("backend down")
	c := Case{Name: "fails", Conc: 1, Sides: []Side{{Name: Plugin, Op: func(context.Context, int) error { return boom }}}}
	_, err := Run(t.Context(), Config{Duration: 10 * time.Millisecond, Repeats: 1}, c)
	require.ErrorIs(t, err, boom)
	assert.Contains(t, err.Error(), "plugin")
}

// measured is a CaseResult with fixed numbers, for the table tests.
func measured() CaseResult {
	m := func(thr float64, p50 time.Duration, srv time.Duration, has bool) Measure {
		return Measure{Result: Result{Throughput: thr, P50: p50, P99: 2 * p50}, Ops: 1000, ServerCPU: srv, ClientCPU: 10 * time.Microsecond, HasServer: has}
	}
	return CaseResult{
		Name: "Get 1KiB", Conc: 32, PerOp: 1, Unit: "calls",
		Sides: []string{Direct, Floor, Plugin},
		Runs: [][]Measure{
			{m(1000, 100*time.Microsecond, 0, false), m(1000, 100*time.Microsecond, 0, false)},
			{m(500, 200*time.Microsecond, 40*time.Microsecond, true), m(500, 200*time.Microsecond, 40*time.Microsecond, true)},
			{m(250, 400*time.Microsecond, 60*time.Microsecond, true), m(500, 400*time.Microsecond, 60*time.Microsecond, true)},
		},
	}
}

func TestRatios(t *testing.T) {
	r := measured()
	tests := []struct {
		name   string
		metric Metric
		other  string
		want   Stat
	}{
		{name: "throughput against direct, repeat by repeat", metric: Throughput, other: Direct, want: Stat{Mid: 0.375, Lo: 0.25, Hi: 0.5, N: 2}},
		{name: "throughput against the floor", metric: Throughput, other: Floor, want: Stat{Mid: 0.75, Lo: 0.5, Hi: 1, N: 2}},
		{name: "p50 against the floor", metric: P50, other: Floor, want: Stat{Mid: 2, Lo: 2, Hi: 2, N: 2}},
		{name: "server CPU against the floor", metric: ServerCPU, other: Floor, want: Stat{Mid: 1.5, Lo: 1.5, Hi: 1.5, N: 2}},
		{name: "server CPU against direct does not apply", metric: ServerCPU, other: Direct, want: Stat{}},
		{name: "total CPU against direct counts the plugin's server and client", metric: TotalCPU, other: Direct, want: Stat{Mid: 7, Lo: 7, Hi: 7, N: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := r.Ratio(tt.metric, Plugin, tt.other)
			assert.Equal(t, tt.want.N, got.N)
			assert.InDelta(t, tt.want.Mid, got.Mid, 1e-9)
			assert.InDelta(t, tt.want.Lo, got.Lo, 1e-9)
			assert.InDelta(t, tt.want.Hi, got.Hi, 1e-9)
		})
	}
	assert.InDelta(t, 375, r.MaxRate(), 1e-9, "the slowest side's median rate")
}

func TestTables(t *testing.T) {
	r := measured()
	t.Run("the case table has a row per side and per ratio", func(t *testing.T) {
		var b strings.Builder
		require.NoError(t, CaseTable("", []CaseResult{r}).Write(&b, false))
		out := b.String()
		t.Log("\n" + out)
		assert.Contains(t, out, "plugin÷direct")
		assert.Contains(t, out, "plugin÷floor")
		assert.Contains(t, out, "375 ±33%")
		assert.Contains(t, out, "0.38x ±33%")
		assert.Contains(t, out, "60µs ±0%")
	})
	t.Run("a sweep in Markdown puts the sides side by side", func(t *testing.T) {
		var b strings.Builder
		require.NoError(t, SweepTable("Get", "concurrency", []string{"32"}, []CaseResult{r}, Throughput).Write(&b, true))
		out := b.String()
		t.Log("\n" + out)
		assert.Contains(t, out, "| concurrency | direct calls/s | floor calls/s | plugin calls/s | calls/s plugin÷direct | calls/s plugin÷floor |")
		assert.Contains(t, out, "| :--- | ---: | ---: | ---: | ---: | ---: |")
		assert.Contains(t, out, "| 32 | 1000 ±0% | 500 ±0% | 375 ±33% | 0.38x ±33% | 0.75x ±33% |")
	})
}

func TestFlags(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		wantRates  []float64
		wantSweeps []string
		wantErr    string
	}{
		{name: "the defaults run 50 % and 80 % open loops and no sweep", args: nil, wantRates: []float64{0.5, 0.8}},
		{name: "rates and sweeps are lists", args: []string{"-open", "0.3, 0.9", "-sweep", "size,conc"}, wantRates: []float64{0.3, 0.9}, wantSweeps: []string{"size", "conc"}},
		{name: "an empty rate list turns the open loop off", args: []string{"-open", ""}, wantRates: nil},
		{name: "all is every sweep", args: []string{"-sweep", "all"}, wantRates: []float64{0.5, 0.8}, wantSweeps: []string{"conc", "size"}},
		{name: "an unknown sweep is refused", args: []string{"-sweep", "scan"}, wantErr: `unknown sweep "scan"`},
		{name: "a rate above 1.5 is refused", args: []string{"-open", "2"}, wantErr: "open-loop rate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("bench", flag.ContinueOnError)
			fs.SetOutput(&strings.Builder{})
			f := Register(fs, Config{Duration: time.Second, Repeats: 3}, []string{"conc", "size"})
			err := fs.Parse(tt.args)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.NoError(t, f.Validate())
			assert.Equal(t, tt.wantRates, f.OpenRates)
			assert.Equal(t, tt.wantSweeps, f.Sweeps)
		})
	}
}

func TestStartFloorRunsAProcessWhoseCPUCanBeRead(t *testing.T) {
	s, err := StartFloor(t.Context(), FloorSpec{Timeout: 20 * time.Second, Backend: "nothing"})
	require.NoError(t, err)
	t.Cleanup(s.Close)
	assert.NotZero(t, s.PID)
	assert.NotEqual(t, os.Getpid(), s.PID)
	cpu, ok, err := s.CPU()
	require.NoError(t, err)
	assert.True(t, ok)
	t.Logf("floor process %d used %s of CPU to start", s.PID, cpu)
	s.Close()
	s.Close() // safe twice
}

func TestInProcessServerHasNoCPUOfItsOwn(t *testing.T) {
	var s *Server
	_, ok, err := s.CPU()
	require.NoError(t, err)
	assert.False(t, ok)
	_, ok, err = (&Server{}).CPU()
	require.NoError(t, err)
	assert.False(t, ok)
}
