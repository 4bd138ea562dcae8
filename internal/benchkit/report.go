package benchkit

import (
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Stat is one number over a case's repeats: the median and the smallest and largest.
type Stat struct {
	Mid, Lo, Hi float64
	// N is how many repeats gave a value; 0 means the number does not apply.
	N int
}

// StatOf summarizes xs (in any order); an empty xs gives a Stat with N 0.
func StatOf(xs []float64) Stat {
	if len(xs) == 0 {
		return Stat{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	mid := s[len(s)/2]
	if len(s)%2 == 0 {
		mid = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Stat{Mid: mid, Lo: s[0], Hi: s[len(s)-1], N: len(s)}
}

// Spread is half the range as a fraction of the median: "±Spread" covers every repeat.
func (s Stat) Spread() float64 {
	if s.N < 2 || s.Mid == 0 {
		return 0
	}
	return (s.Hi - s.Lo) / 2 / math.Abs(s.Mid)
}

// statOf collects one number of each repeat; f says whether the repeat has it.
func statOf(runs []Measure, f func(Measure) (float64, bool)) Stat {
	var xs []float64
	for _, m := range runs {
		if v, ok := f(m); ok {
			xs = append(xs, v)
		}
	}
	return StatOf(xs)
}

// Metric is one column of the tables.
type Metric int

// The metrics the tables can show.
const (
	// Throughput is operations per second.
	Throughput Metric = iota
	// P50 is the median latency of one call.
	P50
	// P99 is the 99th-percentile latency of one call.
	P99
	// ServerCPU is the server process's CPU time per operation.
	ServerCPU
	// ClientCPU is the benchmark process's CPU time per operation.
	ClientCPU
	// TotalCPU is ServerCPU plus ClientCPU.
	TotalCPU
)

// value is m of one repeat, and whether it has one (no latency for a side that only counts,
// no server CPU for the direct client).
func (m Metric) value(x Measure) (float64, bool) {
	switch m {
	case Throughput:
		return x.Throughput, x.Throughput > 0
	case P50:
		return float64(x.P50), x.P50 > 0
	case P99:
		return float64(x.P99), x.P99 > 0
	case ServerCPU:
		return float64(x.ServerCPU), x.HasServer && x.Ops > 0
	case ClientCPU:
		return float64(x.ClientCPU), x.Ops > 0
	case TotalCPU:
		return float64(x.TotalCPU()), x.Ops > 0
	}
	return 0, false
}

// header names the column; unit is the case's operation ("calls", "keys").
func (m Metric) header(unit string) string {
	switch m {
	case Throughput:
		return unit + "/s"
	case P50:
		return "p50"
	case P99:
		return "p99"
	case ServerCPU:
		return "server CPU/op"
	case ClientCPU:
		return "client CPU/op"
	case TotalCPU:
		return "CPU/op"
	}
	return "?"
}

// format prints a value of m without its spread.
func (m Metric) format(v float64) string {
	if m == Throughput {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return formatDuration(time.Duration(v))
}

// formatDuration prints d in microseconds, with one decimal below 10 µs.
func formatDuration(d time.Duration) string {
	us := float64(d) / float64(time.Microsecond)
	if math.Abs(us) < 10 {
		return strconv.FormatFloat(us, 'f', 1, 64) + "µs"
	}
	return strconv.FormatFloat(us, 'f', 0, 64) + "µs"
}

// cell prints a Stat of m with its spread, or "-" when it does not apply.
func (m Metric) cell(s Stat) string {
	if s.N == 0 {
		return "-"
	}
	return withSpread(m.format(s.Mid), s)
}

// ratioCell prints a Stat of ratios: "0.42x ±3%".
func ratioCell(s Stat) string {
	if s.N == 0 {
		return "-"
	}
	return withSpread(strconv.FormatFloat(s.Mid, 'f', 2, 64)+"x", s)
}

func withSpread(v string, s Stat) string {
	if s.N < 2 {
		return v
	}
	return fmt.Sprintf("%s ±%.0f%%", v, 100*s.Spread())
}

// Ratio is the per-repeat ratio of metric m, side a over side b, summarized over the repeats
// both have; N is 0 when either side lacks the case or the metric.
func (r CaseResult) Ratio(m Metric, a, b string) Stat {
	ra, rb := r.Side(a), r.Side(b)
	var xs []float64
	for i := range min(len(ra), len(rb)) {
		va, okA := m.value(ra[i])
		vb, okB := m.value(rb[i])
		if okA && okB && vb != 0 {
			xs = append(xs, va/vb)
		}
	}
	return StatOf(xs)
}

// Stat is metric m of the named side over the repeats.
func (r CaseResult) Stat(m Metric, side string) Stat {
	return statOf(r.Side(side), m.value)
}

// load labels the load of a case: its concurrency, or its arrival rate when open-loop.
func (r CaseResult) load() string {
	if r.Rate > 0 {
		return fmt.Sprintf("%.0f/s", r.Rate)
	}
	return strconv.Itoa(r.Conc)
}

// Table is a header row and rows of cells, printed aligned or as Markdown.
type Table struct {
	// Title is printed above the table.
	Title string
	// Rows are the cells; the first row is the header.
	Rows [][]string
	// Notes are printed below the table, one per line.
	Notes []string
}

// Write prints t to w: right-aligned columns, or a Markdown table ready for a README.
func (t Table) Write(w io.Writer, markdown bool) error {
	if len(t.Rows) == 0 {
		return nil
	}
	switch {
	case t.Title != "":
		if _, err := fmt.Fprintf(w, "\n%s\n\n", t.Title); err != nil {
			return err
		}
	case markdown:
		// A Markdown table must not follow a paragraph line directly.
		if _, err := fmt.Fprintln(w); err != nil {
			return err
		}
	}
	if markdown {
		var b strings.Builder
		for i, row := range t.Rows {
			b.WriteString("|")
			for _, c := range row {
				b.WriteString(" " + strings.ReplaceAll(c, "|", `\|`) + " |")
			}
			b.WriteString("\n")
			if i == 0 {
				b.WriteString("|")
				for j := range row {
					if j == 0 {
						b.WriteString(" :--- |")
					} else {
						b.WriteString(" ---: |")
					}
				}
				b.WriteString("\n")
			}
		}
		if _, err := io.WriteString(w, b.String()); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		for _, row := range t.Rows {
			if _, err := fmt.Fprintln(tw, strings.Join(row, "\t")+"\t"); err != nil {
				return err
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	for _, n := range t.Notes {
		if _, err := fmt.Fprintf(w, "\n%s", n); err != nil {
			return err
		}
	}
	if len(t.Notes) > 0 {
		_, err := fmt.Fprintln(w)
		return err
	}
	return nil
}

// caseMetrics are the columns of CaseTable.
var caseMetrics = []Metric{Throughput, P50, P99, ServerCPU, ClientCPU, TotalCPU}

// SpreadNote explains the cells of every table.
const SpreadNote = "Cells are the median of the repeats ± half their range. Ratio rows are plugin ÷ direct and plugin ÷ floor\n" +
	"per column, repeat by repeat: above 1 is more (better for throughput, worse for latency and CPU). CPU/op is\n" +
	"utime+stime per operation: server from /proc/PID/stat of the plugin or floor process, client from getrusage\n" +
	"of the benchmark process (which holds the direct client, and the plugin when it runs in-process)."

// CaseTable is every side of every case, one row each, followed by the plugin ÷ direct and
// plugin ÷ floor rows of the case.
func CaseTable(title string, results []CaseResult) Table {
	header := []string{"case", "load", "side", "op"}
	for _, m := range caseMetrics {
		header = append(header, m.header("ops"))
	}
	t := Table{Title: title, Rows: [][]string{header}, Notes: []string{SpreadNote}}
	for _, r := range results {
		for _, side := range r.Sides {
			row := []string{r.Name, r.load(), side, r.Unit}
			for _, m := range caseMetrics {
				row = append(row, m.cell(r.Stat(m, side)))
			}
			t.Rows = append(t.Rows, row)
		}
		for _, other := range []string{Direct, Floor} {
			if r.Side(Plugin) == nil || r.Side(other) == nil {
				continue
			}
			row := []string{r.Name, r.load(), Plugin + "÷" + other, ""}
			for _, m := range caseMetrics {
				row = append(row, ratioCell(r.Ratio(m, Plugin, other)))
			}
			t.Rows = append(t.Rows, row)
		}
		if r.Rate > 0 {
			t.Notes = append(t.Notes, r.lagNote())
		}
	}
	return t
}

// lagNote says how late an open-loop case's calls started after their due time, per side: the
// part of its latencies that is the harness waking a worker (or, when large, calls queued
// for a free one).
func (r CaseResult) lagNote() string {
	parts := make([]string, len(r.Sides))
	for i, side := range r.Sides {
		p50 := statOf(r.Runs[i], func(m Measure) (float64, bool) { return float64(m.LagP50), true })
		p99 := statOf(r.Runs[i], func(m Measure) (float64, bool) { return float64(m.LagP99), true })
		parts[i] = fmt.Sprintf("%s %s/%s", side, formatDuration(time.Duration(p50.Mid)), formatDuration(time.Duration(p99.Mid)))
	}
	return fmt.Sprintf("%s at %s: calls started after their due time by (p50/p99) %s; that lag is inside the latencies above.",
		r.Name, r.load(), strings.Join(parts, ", "))
}

// SweepTable is one row per case of a sweep (labels[i] names results[i] in the param column):
// for each metric, the direct, floor and plugin values side by side and plugin ÷ direct and
// plugin ÷ floor.
func SweepTable(title, param string, labels []string, results []CaseResult, metrics ...Metric) Table {
	if len(results) == 0 {
		return Table{}
	}
	sides := []string{}
	for _, s := range []string{Direct, Floor, Plugin} {
		if results[0].Side(s) != nil {
			sides = append(sides, s)
		}
	}
	header := []string{param}
	for _, m := range metrics {
		h := m.header(results[0].Unit)
		for _, s := range sides {
			header = append(header, s+" "+h)
		}
		for _, other := range []string{Direct, Floor} {
			if results[0].Side(other) != nil && results[0].Side(Plugin) != nil {
				header = append(header, h+" plugin÷"+other)
			}
		}
	}
	t := Table{Title: title, Rows: [][]string{header}}
	for i, r := range results {
		row := []string{labels[i]}
		for _, m := range metrics {
			for _, s := range sides {
				row = append(row, m.cell(r.Stat(m, s)))
			}
			for _, other := range []string{Direct, Floor} {
				if results[0].Side(other) != nil && results[0].Side(Plugin) != nil {
					row = append(row, ratioCell(r.Ratio(m, Plugin, other)))
				}
			}
		}
		t.Rows = append(t.Rows, row)
	}
	return t
}

// SweepPoint is one point of a scaling sweep: its label in the table and the case it runs.
type SweepPoint struct {
	Label string
	Case  Case
}

// RunSweep runs every point of a sweep and writes its table to out (Markdown when markdown).
func RunSweep(ctx context.Context, cfg Config, out io.Writer, markdown bool, title, param string, points []SweepPoint, metrics ...Metric) error {
	labels := make([]string, 0, len(points))
	results := make([]CaseResult, 0, len(points))
	for _, p := range points {
		r, err := Run(ctx, cfg, p.Case)
		if err != nil {
			return fmt.Errorf("%s %s: %w", title, p.Label, err)
		}
		labels = append(labels, p.Label)
		results = append(results, r)
	}
	return SweepTable(title, param, labels, results, metrics...).Write(out, markdown)
}
