package apierr_test

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/prism-gateway/plugins/core/apierr"
)

func TestLimitWording(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"a size over a configured limit names the field, the limit and its key",
			apierr.TooLarge("items[3].value", 2000000, 1048576, "limits.max_value_bytes", "bytes"),
			"items[3].value: must be at most 1048576 bytes (limits.max_value_bytes), got 2000000"},
		{"a count names what is counted", apierr.TooLarge("keys", 101, 100, "limits.max_items_per_request", "keys"),
			"keys: must be at most 100 keys (limits.max_items_per_request), got 101"},
		{"a fixed limit has no key", apierr.TooLarge("subscription.group", 256, 255, "", "characters"),
			"subscription.group: must be at most 255 characters, got 256"},
		{"no unit for a plain number", apierr.TooLarge("page_size", int32(7), 5, "limits.max_page_size", ""),
			"page_size: must be at most 5 (limits.max_page_size), got 7"},
		{"64-bit counts", apierr.TooLarge("max_bytes", int64(1)<<40, 1<<20, "limits.max_page_bytes", "bytes"),
			"max_bytes: must be at most 1048576 bytes (limits.max_page_bytes), got 1099511627776"},
		{"a range below its lower bound", apierr.OutOfRange("last_n", int64(0), 1, 100, "limits.max_tail_last_n", "records"),
			"last_n: must be between 1 and 100 records (limits.max_tail_last_n), got 0"},
		{"a range above its upper bound", apierr.OutOfRange("ack.ack_ids", 11, 1, 10, "limits.max_ack_ids", "ids"),
			"ack.ack_ids: must be between 1 and 10 ids (limits.max_ack_ids), got 11"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, codes.InvalidArgument, apierr.Code(tt.err))
			assert.EqualError(t, tt.err, tt.want)
		})
	}
}

func TestNamespace(t *testing.T) {
	t.Parallel()
	custom := regexp.MustCompile(`^ns[0-9]*$`)
	tests := []struct {
		name   string
		ns     string
		custom *regexp.Regexp
		key    string
		want   string // the whole message; empty = accepted
	}{
		{"a plain name", "orders", nil, "", ""},
		{"the longest name, 64 characters", "a" + strings.Repeat("b", 63), nil, "", ""},
		{"digits, dots, dashes and underscores after the first letter", "a0._-z", nil, "", ""},
		{"empty is required", "", nil, "", "namespace: required"},
		{"empty is required under a custom rule too", "", custom, "limits.namespace_pattern", "namespace: required"},
		{"upper case", "Demo", nil, "", `namespace: must match ^[a-z][a-z0-9_.-]{0,63}$ (1 to 64 characters), got "Demo"`},
		{"the key of a configurable rule is named", "Demo", nil, "limits.namespace_pattern",
			`namespace: must match ^[a-z][a-z0-9_.-]{0,63}$ (1 to 64 characters, limits.namespace_pattern), got "Demo"`},
		{"65 characters", strings.Repeat("a", 65), nil, "", `namespace: must match ^[a-z][a-z0-9_.-]{0,63}$ (1 to 64 characters), got "` + strings.Repeat("a", 65) + `"`},
		{"a leading digit", "1a", nil, "", `namespace: must match ^[a-z][a-z0-9_.-]{0,63}$ (1 to 64 characters), got "1a"`},
		{"a colon, which would split the stored key", "a:b", nil, "", `namespace: must match ^[a-z][a-z0-9_.-]{0,63}$ (1 to 64 characters), got "a:b"`},
		{"a custom rule accepts its names", "ns12", custom, "limits.namespace_pattern", ""},
		{"a custom rule rejects the default's names", "orders", custom, "limits.namespace_pattern",
			`namespace: must match ^ns[0-9]*$ (limits.namespace_pattern), got "orders"`},
		{"a huge name is shortened in the error", strings.Repeat("A", 1000), nil, "",
			`namespace: must match ^[a-z][a-z0-9_.-]{0,63}$ (1 to 64 characters), got "` + strings.Repeat("A", 80) + `"... (1000 bytes)`},
	}
	re := regexp.MustCompile(apierr.NamespacePattern)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := apierr.Namespace(tt.ns, tt.custom, tt.key)
			if tt.custom == nil && tt.ns != "" {
				assert.Equal(t, re.MatchString(tt.ns), err == nil, "the fast check agrees with NamespacePattern")
			}
			if tt.want == "" {
				assert.NoError(t, err)
				return
			}
			assert.Equal(t, codes.InvalidArgument, apierr.Code(err))
			assert.EqualError(t, err, tt.want)
		})
	}
}

func TestTime(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 2, 20, 0, 0, 5, time.UTC)
	tests := []struct {
		name string
		ts   *timestamppb.Timestamp
		want string // the whole message; empty = accepted
	}{
		{"a valid time", timestamppb.New(now), ""},
		{"unset is missing", nil, "start_time: required"},
		{"nanos out of range", &timestamppb.Timestamp{Seconds: 1, Nanos: 1e9},
			"start_time: must be a time from 0001-01-01 to 9999-12-31 with nanos from 0 to 999999999, got 1s and 1000000000ns since 1970-01-01"},
		{"after the year 9999", &timestamppb.Timestamp{Seconds: 253402300800},
			"start_time: must be a time from 0001-01-01 to 9999-12-31 with nanos from 0 to 999999999, got 253402300800s and 0ns since 1970-01-01"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := apierr.Time("start_time", tt.ts)
			if tt.want == "" {
				require.NoError(t, err)
				assert.True(t, now.Equal(got))
				return
			}
			assert.Equal(t, codes.InvalidArgument, apierr.Code(err))
			require.EqualError(t, err, tt.want)
			assert.NotContains(t, err.Error(), "\u00a0", "protobuf's own text (with its non-breaking space) must not leak")
		})
	}
}
