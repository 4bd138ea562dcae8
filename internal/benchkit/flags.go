package benchkit

import (
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Flags are the options every benchmark takes; Register defines them on a flag set.
type Flags struct {
	Config
	// OpenRates are the open-loop arrival rates as fractions of the closed-loop maximum
	// (-open); empty runs no open-loop case.
	OpenRates []float64
	// Sweeps are the scaling sweeps to run (-sweep), each a name the benchmark knows.
	Sweeps []string
	// Markdown prints every table as Markdown (-markdown).
	Markdown bool
	// InProcess serves the plugin inside the benchmark's process (-inprocess): its CPU time
	// then counts as the client's.
	InProcess bool
	// CPUProfile, PluginCPUProfile and FloorCPUProfile are CPU profile files of the benchmark,
	// plugin and floor processes (-cpuprofile, -plugin-cpuprofile, -floor-cpuprofile).
	CPUProfile, PluginCPUProfile, FloorCPUProfile string
	// FloorWorkers gives the floor grpc.NumStreamWorkers (-floor-workers); 0 keeps it bare.
	FloorWorkers int
}

// Register defines the common flags on fs with the given defaults; sweeps are the names -sweep
// accepts (besides "all"). Call Validate after fs.Parse.
func Register(fs *flag.FlagSet, defaults Config, sweeps []string) *Flags {
	f := &Flags{Config: defaults, OpenRates: []float64{0.5, 0.8}}
	fs.DurationVar(&f.Duration, "duration", defaults.Duration, "measured time per side per repeat of each case")
	fs.DurationVar(&f.Warmup, "warmup", defaults.Warmup, "unmeasured time per side before each case")
	fs.IntVar(&f.Repeats, "repeat", defaults.Repeats, "repeats of each case; tables print the median ± half the range")
	fs.IntVar(&f.Calls, "calls", defaults.Calls, "calls per side per repeat instead of -duration (0: use -duration)")
	fs.Func("open", "open-loop arrival rates as fractions of the closed-loop maximum, comma-separated; empty: no open-loop case (default 0.5,0.8)", func(v string) error {
		rates, err := parseRates(v)
		f.OpenRates = rates
		return err
	})
	fs.Func("sweep", "scaling sweeps to run, comma-separated: "+strings.Join(append(slices.Clone(sweeps), "all"), ", "), func(v string) error {
		for _, name := range strings.Split(v, ",") {
			name = strings.TrimSpace(name)
			switch {
			case name == "":
			case name == "all":
				f.Sweeps = append(f.Sweeps, sweeps...)
			case slices.Contains(sweeps, name):
				f.Sweeps = append(f.Sweeps, name)
			default:
				return fmt.Errorf("unknown sweep %q (want %s or all)", name, strings.Join(sweeps, ", "))
			}
		}
		return nil
	})
	fs.BoolVar(&f.Markdown, "markdown", false, "print the tables as Markdown, ready for a plugin README")
	fs.BoolVar(&f.InProcess, "inprocess", false, "serve the plugin inside the benchmark's process (its CPU then counts as the client's)")
	fs.StringVar(&f.CPUProfile, "cpuprofile", "", "write a CPU profile of the benchmark process to this file")
	fs.StringVar(&f.PluginCPUProfile, "plugin-cpuprofile", "", "write a CPU profile of the plugin process to this file")
	fs.StringVar(&f.FloorCPUProfile, "floor-cpuprofile", "", "write a CPU profile of the floor process to this file")
	fs.IntVar(&f.FloorWorkers, "floor-workers", 0, "give the floor grpc.NumStreamWorkers(N), as the plugins' core does (0: bare, a goroutine per call)")
	return f
}

// Validate checks the values Register's flags were given.
func (f *Flags) Validate() error {
	switch {
	case f.Duration <= 0 && f.Calls <= 0:
		return fmt.Errorf("-duration: must be positive, got %s", f.Duration)
	case f.Repeats < 1:
		return fmt.Errorf("-repeat: must be at least 1, got %d", f.Repeats)
	case f.Calls < 0:
		return fmt.Errorf("-calls: must not be negative, got %d", f.Calls)
	case f.Warmup < 0:
		return fmt.Errorf("-warmup: must not be negative, got %s", f.Warmup)
	case f.FloorWorkers < 0:
		return fmt.Errorf("-floor-workers: must not be negative, got %d", f.FloorWorkers)
	}
	return nil
}

// Sweep reports whether the named sweep was asked for.
func (f *Flags) Sweep(name string) bool { return slices.Contains(f.Sweeps, name) }

// Describe is one line saying how the cases are measured, for the top of the output.
func (f *Flags) Describe() string {
	per := f.Duration.String() + " per side per repeat"
	if f.Calls > 0 {
		per = strconv.Itoa(f.Calls) + " calls per side per repeat"
	}
	floor := "bare (a goroutine per call)"
	if f.FloorWorkers > 0 {
		floor = fmt.Sprintf("with %d stream workers", f.FloorWorkers)
	}
	repeats := fmt.Sprintf("%d repeats", f.Repeats)
	if f.Repeats == 1 {
		repeats = "1 run"
	}
	return fmt.Sprintf("%s × %s in %d alternating slices, warmup %s per side; floor server %s",
		repeats, per, Rounds, f.Warmup, floor)
}

// FloorSpec fills the floor options the flags set into spec.
func (f *Flags) FloorSpec(spec FloorSpec) FloorSpec {
	spec.CPUProfile = f.FloorCPUProfile
	spec.StreamWorkers = f.FloorWorkers
	return spec
}

// parseRates reads "0.5,0.8" into fractions in (0, 1.5].
func parseRates(v string) ([]float64, error) {
	var rates []float64
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		r, err := strconv.ParseFloat(s, 64)
		if err != nil || r <= 0 || r > 1.5 {
			return nil, fmt.Errorf("open-loop rate %q: want a fraction of the maximum above 0 and at most 1.5", s)
		}
		rates = append(rates, r)
	}
	return rates, nil
}

// OpenCases turns a closed-loop result into the open-loop cases of f.OpenRates: build makes the
// case (its sides) for one rate in calls per second and a label such as "50%".
func (f *Flags) OpenCases(closed CaseResult, build func(rate float64, label string) Case) []Case {
	maxRate := closed.MaxRate()
	var cases []Case
	for _, frac := range f.OpenRates {
		if maxRate <= 0 {
			break
		}
		cases = append(cases, build(frac*maxRate, fmt.Sprintf("%.0f%%", 100*frac)))
	}
	return cases
}
