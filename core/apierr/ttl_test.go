package apierr_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/prism-gateway/plugins/core/apierr"
)

func TestTTL(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		d     *durationpb.Duration
		limit time.Duration
		want  time.Duration
		err   []string // fragments of the INVALID_ARGUMENT message; empty = accepted
	}{
		{"unset is zero", nil, 0, 0, nil},
		{"a minute", durationpb.New(time.Minute), 0, time.Minute, nil},
		{"the longest", durationpb.New(apierr.MaxTTL), 0, apierr.MaxTTL, nil},
		{"one nanosecond over the longest", durationpb.New(apierr.MaxTTL + 1), 0, 0, []string{"ttl: must be at most", "limits.max_ttl"}},
		{"beyond time.Duration shows what was sent", &durationpb.Duration{Seconds: 315576000000}, 0, 0, []string{"got 315576000000s"}},
		{"a configured limit", durationpb.New(2 * time.Hour), time.Hour, 0, []string{"at most 1h0m0s (limits.max_ttl), got 7200s"}},
		{"a configured limit above the longest is capped", durationpb.New(apierr.MaxTTL + time.Hour), 2 * apierr.MaxTTL, 0, []string{"limits.max_ttl"}},
		{"negative", durationpb.New(-time.Second), 0, 0, []string{"must not be negative, got -1s"}},
		{"negative nanos only", &durationpb.Duration{Nanos: -5}, 0, 0, []string{"must not be negative, got -0.000000005s"}},
		{"mixed signs", &durationpb.Duration{Seconds: 1, Nanos: -1}, 0, 0, []string{"same sign"}},
		{"nanos out of range", &durationpb.Duration{Nanos: 1e9}, 0, 0, []string{"nanos must be between"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := apierr.TTL("ttl", tc.d, tc.limit, "limits.max_ttl")
			if len(tc.err) == 0 {
				require.NoError(t, err)
				assert.Equal(t, tc.want, got)
				return
			}
			require.Error(t, err)
			assert.Equal(t, codes.InvalidArgument, apierr.Code(err))
			for _, w := range tc.err {
				assert.Contains(t, err.Error(), w)
			}
			assert.NotContains(t, err.Error(), "\u00a0", "protobuf's own text (with its non-breaking space) must not leak")
		})
	}
}
