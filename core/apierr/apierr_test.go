package apierr_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/prism-gateway/plugins/core/apierr"
)

func TestCodeAndStatus(t *testing.T) {
	backend := errors.New("dial tcp 127.0.0.1:5432: connection refused")
	tests := []struct {
		name    string
		err     error
		code    codes.Code
		message string
	}{
		{"no error is OK", nil, codes.OK, ""},
		{"an invalid field names the field and the limit", apierr.Invalid("records[2].key", "at most %d bytes, got %d", 10, 11),
			codes.InvalidArgument, "records[2].key: at most 10 bytes, got 11"},
		{"a kind made with New keeps its message", apierr.New(apierr.ErrNotFound, "no record %q", "x"), codes.NotFound, `no record "x"`},
		{"a wrapped kind is found through the chain", fmt.Errorf("put: %w", apierr.New(apierr.ErrAborted, "version mismatch")),
			codes.Aborted, "put: version mismatch"},
		{"a kind wrapped with %w directly", fmt.Errorf("key gone: %w", apierr.ErrFailedPrecondition), codes.FailedPrecondition, "key gone: failed precondition"},
		{"a backend failure is UNAVAILABLE with its cause", apierr.Unavailable("postgres", backend), codes.Unavailable,
			"postgres: unavailable: dial tcp 127.0.0.1:5432: connection refused"},
		{"unauthenticated", apierr.New(apierr.ErrUnauthenticated, "no token"), codes.Unauthenticated, "no token"},
		{"permission denied", apierr.New(apierr.ErrPermissionDenied, "denied"), codes.PermissionDenied, "denied"},
		{"resource exhausted", apierr.New(apierr.ErrResourceExhausted, "too many"), codes.ResourceExhausted, "too many"},
		{"a deadline is DEADLINE_EXCEEDED", fmt.Errorf("get: %w", context.DeadlineExceeded), codes.DeadlineExceeded, "get: context deadline exceeded"},
		{"a cancelled caller is CANCELLED", fmt.Errorf("get: %w", context.Canceled), codes.Canceled, "get: context canceled"},
		{"a status passes through unchanged", status.Error(codes.OutOfRange, "past the end"), codes.OutOfRange, "past the end"},
		{"anything else is INTERNAL", errors.New("bug"), codes.Internal, "bug"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.code, apierr.Code(tt.err))
			st := apierr.Status(tt.err)
			if tt.err == nil {
				assert.NoError(t, st)
				return
			}
			s, ok := status.FromError(st)
			assert.True(t, ok, "Status returns a gRPC status")
			assert.Equal(t, tt.code, s.Code())
			assert.Equal(t, tt.message, s.Message())
		})
	}
}
