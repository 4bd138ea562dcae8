package core

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestNextRetryDoublesUpToTheIntervalAndStaysThere(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		interval time.Duration
		want     []time.Duration // pauses after the 1st, 2nd, ... failure
	}{
		{"5s interval", 5 * time.Second, []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, 1600 * time.Millisecond, 3200 * time.Millisecond, 5 * time.Second, 5 * time.Second}},
		{"interval equal to the first pause", 100 * time.Millisecond, []time.Duration{100 * time.Millisecond, 100 * time.Millisecond}},
		{"interval not a power of two of the first pause", 300 * time.Millisecond, []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			retry := firstRetry
			for i, want := range tc.want {
				assert.Equal(t, want, min(retry, tc.interval), "pause after failure %d", i+1)
				retry = nextRetry(retry, tc.interval)
			}
			// A very long outage: thousands of failures never overflow the pause.
			for i := range 10_000 {
				retry = nextRetry(retry, tc.interval)
				if retry <= 0 || retry > tc.interval {
					t.Fatalf("pause after %d more failures is %s", i+1, retry)
				}
			}
		})
	}
}
