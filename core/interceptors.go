package core

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/prism-gateway/plugins/core/apierr"
)

// controlPrefixes are services that stay available while draining and are not counted in flight.
var controlPrefixes = []string{"/grpc.health.v1.", "/grpc.reflection.", "/prism.plugin.v1."}

func isControl(fullMethod string) bool {
	for _, p := range controlPrefixes {
		if strings.HasPrefix(fullMethod, p) {
			return true
		}
	}
	return false
}

// splitMethod turns "/pkg.Service/Method" into its service and method.
func splitMethod(fullMethod string) (string, string) {
	service, method, ok := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if !ok {
		return "unknown", fullMethod
	}
	return service, method
}

var errDraining = status.Error(codes.Unavailable, "plugin is draining: retry on another replica")

func (s *Server) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	// Admission was decided when the call arrived (admission.TagRPC).
	if !admitted(ctx) {
		s.observe(ctx, info.FullMethod, time.Now(), errDraining)
		return nil, errDraining
	}
	if field, bad := s.codec.bad.take(req); bad {
		err := badUTF8Error(field)
		s.observe(ctx, info.FullMethod, time.Now(), err)
		return nil, err
	}
	start := time.Now()
	m := s.metrics.forMethod(info.FullMethod)
	m.inFlight.Inc()
	defer m.inFlight.Dec()

	var resp any
	err := s.atEdge(info.FullMethod, func() error {
		var herr error
		resp, herr = handler(ctx, req)
		return herr
	})
	s.observe(ctx, info.FullMethod, start, err)
	return resp, err
}

func (s *Server) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if !admitted(ss.Context()) {
		s.observe(ss.Context(), info.FullMethod, time.Now(), errDraining)
		return errDraining
	}
	start := time.Now()
	m := s.metrics.forMethod(info.FullMethod)
	m.inFlight.Inc()
	defer m.inFlight.Dec()

	// Streams can live for hours; a drain cancels their context so they end and clients move on.
	ctx, cancel := context.WithCancel(ss.Context())
	defer cancel()
	stopAfter := context.AfterFunc(s.streamsCtx, cancel)
	defer stopAfter()

	err := s.atEdge(info.FullMethod, func() error {
		return handler(srv, &contextStream{ServerStream: ss, ctx: ctx, bad: &s.codec.bad})
	})
	if err != nil && s.streamsCtx.Err() != nil && status.Code(err) == codes.Canceled {
		err = errDraining
	}
	s.observe(ctx, info.FullMethod, start, err)
	return err
}

// atEdge runs a handler, turns a panic into INTERNAL, maps errors to gRPC codes in one place and
// scrubs secrets from messages that leave the process.
func (s *Server) atEdge(fullMethod string, call func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			s.logger().Error("panic in handler", "method", fullMethod, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			err = status.Error(codes.Internal, "internal error")
		}
	}()
	err = call()
	if err == nil {
		return nil
	}
	st := status.Convert(apierr.Status(err))
	return status.Error(st.Code(), s.scrub.scrub(st.Message()))
}

// badUTF8Error rejects a request whose string field is not valid UTF-8.
func badUTF8Error(field string) error {
	return apierr.Status(apierr.Invalid(field, "must be valid UTF-8"))
}

// observe records metrics and a log line for a finished call.
func (s *Server) observe(ctx context.Context, fullMethod string, start time.Time, err error) {
	if t, ok := ctx.Value(ticketKey{}).(*ticket); ok {
		t.observed.Store(true)
	}
	m := s.metrics.forMethod(fullMethod)
	code := status.Code(err)
	elapsed := time.Since(start)
	m.handled(code).Inc()
	m.latency.Observe(elapsed.Seconds())

	level := slog.LevelDebug
	switch code {
	case codes.Internal, codes.Unknown, codes.DataLoss:
		level = slog.LevelError
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted:
		level = slog.LevelWarn
	}
	log := s.logger()
	if !log.Enabled(ctx, level) {
		return
	}
	service, method := splitMethod(fullMethod)
	attrs := []slog.Attr{
		slog.String("service", service), slog.String("method", method),
		slog.String("code", code.String()), slog.Duration("duration", elapsed),
	}
	if err != nil {
		attrs = append(attrs, slog.String("error", status.Convert(err).Message()))
	}
	log.LogAttrs(ctx, level, "rpc", attrs...)
}

// contextStream replaces a stream's context with one the server can cancel on drain, and rejects
// a received message that the codec found invalid UTF-8 in.
type contextStream struct {
	grpc.ServerStream
	ctx context.Context
	bad *badUTF8
}

func (c *contextStream) Context() context.Context { return c.ctx }

func (c *contextStream) RecvMsg(m any) error {
	if err := c.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if field, bad := c.bad.take(m); bad {
		return badUTF8Error(field)
	}
	return nil
}
