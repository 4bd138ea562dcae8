package faulttest

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
)

var figures struct {
	mu    sync.Mutex
	lines map[string]string
}

// Report records a test's figures: logged now, and written by WriteSummary at the end.
func Report(tb testing.TB, format string, args ...any) {
	tb.Helper()
	line := fmt.Sprintf(format, args...)
	tb.Logf("figures: %s", line)
	figures.mu.Lock()
	defer figures.mu.Unlock()
	if figures.lines == nil {
		figures.lines = map[string]string{}
	}
	figures.lines[tb.Name()] = line
}

// WriteSummary writes every reported figure, one line per test, to the file named by
// PRISM_FAULTTEST_SUMMARY (`make test` prints it: go test hides a passing package's output) and
// to stderr.
func WriteSummary() error {
	figures.mu.Lock()
	defer figures.mu.Unlock()
	names := make([]string, 0, len(figures.lines))
	for n := range figures.lines {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("fault suite figures:\n")
	for _, n := range names {
		fmt.Fprintf(&b, "  %-52s %s\n", n, figures.lines[n])
	}
	fmt.Fprint(os.Stderr, b.String())
	if path := os.Getenv("PRISM_FAULTTEST_SUMMARY"); path != "" {
		if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil { //nolint:gosec // path chosen by make test
			return fmt.Errorf("write fault summary: %w", err)
		}
	}
	return nil
}
