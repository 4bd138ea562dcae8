package apierr

import (
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"
)

// Time validates a requested point in time. protobuf's own CheckValid text is not passed on: it
// prints the message with randomised spacing (a non-breaking space), which clients cannot match.
// Callers check optional fields for nil first; a nil ts is reported as missing.
func Time(field string, ts *timestamppb.Timestamp) (time.Time, error) {
	if ts == nil {
		return time.Time{}, Invalid(field, "required")
	}
	if err := ts.CheckValid(); err != nil {
		return time.Time{}, Invalid(field, "must be a time from 0001-01-01 to 9999-12-31 with nanos from 0 to 999999999, got %ds and %dns since 1970-01-01", ts.GetSeconds(), ts.GetNanos())
	}
	return ts.AsTime(), nil
}
