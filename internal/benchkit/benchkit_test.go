package benchkit

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestSampleResult(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		d := make([]time.Duration, len(ns))
		for i, n := range ns {
			d[i] = time.Duration(n) * time.Millisecond
		}
		return d
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i // reversed, so Result has to sort
	}
	tests := []struct {
		name   string
		sample Sample
		perOp  int
		want   Result
	}{
		{
			name:   "an empty sample is all zero",
			sample: Sample{Elapsed: time.Second},
			perOp:  1,
			want:   Result{},
		},
		{
			name:   "one call is its own median and tail",
			sample: Sample{Lat: ms(7), Elapsed: time.Second},
			perOp:  1,
			want:   Result{Throughput: 1, P50: 7 * time.Millisecond, P99: 7 * time.Millisecond},
		},
		{
			name:   "an even count takes the upper middle as the median",
			sample: Sample{Lat: ms(4, 1, 3, 2), Elapsed: 2 * time.Second},
			perOp:  1,
			want:   Result{Throughput: 2, P50: 3 * time.Millisecond, P99: 4 * time.Millisecond},
		},
		{
			name:   "a hundred unsorted calls give the 51st and the 100th",
			sample: Sample{Lat: ms(hundred...), Elapsed: 10 * time.Second},
			perOp:  1,
			want:   Result{Throughput: 10, P50: 51 * time.Millisecond, P99: 100 * time.Millisecond},
		},
		{
			name:   "each latency of a batch counts perOp operations",
			sample: Sample{Lat: ms(5, 5), Elapsed: time.Second},
			perOp:  100,
			want:   Result{Throughput: 200, P50: 5 * time.Millisecond, P99: 5 * time.Millisecond},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.sample
			got := s.Result(tt.perOp)
			assert.InDelta(t, tt.want.Throughput, got.Throughput, 1e-9)
			assert.Equal(t, tt.want.P50, got.P50)
			assert.Equal(t, tt.want.P99, got.P99)
		})
	}
}

func TestSampleMerge(t *testing.T) {
	s := Sample{Lat: []time.Duration{1}, Elapsed: time.Second}
	s.Merge(Sample{Lat: []time.Duration{2, 3}, Elapsed: 2 * time.Second})
	assert.Equal(t, []time.Duration{1, 2, 3}, s.Lat)
	assert.Equal(t, 3*time.Second, s.Elapsed)
}

func TestRatio(t *testing.T) {
	tests := []struct {
		name string
		a, b float64
		want float64
	}{
		{name: "plugin as fast as direct is one", a: 500, b: 500, want: 1},
		{name: "plugin at half the direct rate is one half", a: 250, b: 500, want: 0.5},
		{name: "no direct throughput is zero, not infinity", a: 250, b: 0, want: 0},
		{name: "no throughput at all is zero, not NaN", a: 0, b: 0, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.InDelta(t, tt.want, Ratio(tt.a, tt.b), 1e-12)
		})
	}
}

func TestMicros(t *testing.T) {
	tests := []struct {
		name string
		d    time.Duration
		want string
	}{
		{name: "zero", d: 0, want: "0us"},
		{name: "whole microseconds", d: 120 * time.Microsecond, want: "120us"},
		{name: "rounds to the nearest microsecond", d: 1600 * time.Nanosecond, want: "2us"},
		{name: "negative differences keep their sign", d: -3 * time.Microsecond, want: "-3us"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, Micros(tt.d))
		})
	}
}
