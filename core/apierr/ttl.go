package apierr

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
)

// MaxTTL is the longest time to live any plugin stores. Go's time.Duration ends at about 292
// years; a bound well below it keeps every expiry exact end to end, jitter and rounding
// included, so a requested expiry never becomes "keep forever".
const MaxTTL = 100 * 365 * 24 * time.Hour

// TTL validates a requested time to live. limit is the configured bound (limitKey names it in
// errors); 0 means MaxTTL. An unset duration is 0.
func TTL(field string, d *durationpb.Duration, limit time.Duration, limitKey string) (time.Duration, error) {
	if d == nil {
		return 0, nil
	}
	if limit <= 0 || limit > MaxTTL {
		limit = MaxTTL
	}
	seconds, nanos := d.GetSeconds(), d.GetNanos()
	switch {
	case nanos <= -1e9 || nanos >= 1e9:
		return 0, Invalid(field, "nanos must be between -999999999 and 999999999, got %d", nanos)
	case (seconds > 0 && nanos < 0) || (seconds < 0 && nanos > 0):
		return 0, Invalid(field, "seconds and nanos must have the same sign, got %ds and %dns", seconds, nanos)
	case seconds < 0 || nanos < 0:
		return 0, Invalid(field, "must not be negative, got %s", formatSeconds(seconds, nanos))
	case seconds > int64(limit/time.Second):
		return 0, Invalid(field, "must be at most %s (%s), got %s", limit, limitKey, formatSeconds(seconds, nanos))
	}
	ttl := time.Duration(seconds)*time.Second + time.Duration(nanos)
	if ttl > limit {
		return 0, Invalid(field, "must be at most %s (%s), got %s", limit, limitKey, formatSeconds(seconds, nanos))
	}
	return ttl, nil
}

// formatSeconds shows a duration as the client sent it, even beyond time.Duration's range.
func formatSeconds(seconds int64, nanos int32) string {
	if nanos == 0 {
		return fmt.Sprintf("%ds", seconds)
	}
	if seconds == 0 && nanos < 0 {
		return fmt.Sprintf("-0.%09ds", -nanos)
	}
	if nanos < 0 {
		nanos = -nanos
	}
	return fmt.Sprintf("%d.%09ds", seconds, nanos)
}
