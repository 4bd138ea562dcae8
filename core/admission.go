package core

import (
	"context"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"
)

// admission decides whether a data call may run at the moment its stream arrives (its headers),
// not once its request message has been read: grpc-go runs interceptors only after the whole
// message arrived, so a large upload that began before a drain would otherwise be refused, and
// would not count as in flight while it was still arriving.
type admission struct{ s *Server }

// ticket is one data call's admission, carried in its context from TagRPC to the interceptor
// and to the stats.End that releases it.
type ticket struct {
	method   string
	refused  bool
	released atomic.Bool
	// observed is set once the call was logged and counted; a call grpc-go rejected before
	// any interceptor ran (an oversized request) is observed at its End instead.
	observed atomic.Bool
}

type ticketKey struct{}

// TagRPC implements stats.Handler: it counts the call in flight or refuses it if draining has
// begun. The count is taken before the check, so a drain never misses a call that got past it.
func (a admission) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	if _, ok := a.s.dataMethods[info.FullMethodName]; !ok {
		return ctx // control plane, reflection, or a method grpc-go answers UNIMPLEMENTED
	}
	t := &ticket{method: info.FullMethodName}
	a.s.inflight.add()
	if a.s.draining.Load() {
		a.s.inflight.done()
		t.refused = true
	}
	return context.WithValue(ctx, ticketKey{}, t)
}

// HandleRPC implements stats.Handler: the end of an admitted call, however it ended, releases it.
func (a admission) HandleRPC(ctx context.Context, rs stats.RPCStats) {
	end, ok := rs.(*stats.End)
	if !ok {
		return
	}
	t, ok := ctx.Value(ticketKey{}).(*ticket)
	if !ok {
		return
	}
	if !t.refused && t.released.CompareAndSwap(false, true) {
		a.s.inflight.done()
	}
	if end.Error != nil && !t.observed.Load() {
		a.s.observe(ctx, t.method, end.BeginTime, end.Error)
	}
}

// TagConn implements stats.Handler.
func (admission) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

// HandleConn implements stats.Handler.
func (admission) HandleConn(context.Context, stats.ConnStats) {}

// admitted reports whether the call whose context this is was admitted when it arrived.
func admitted(ctx context.Context) bool {
	t, ok := ctx.Value(ticketKey{}).(*ticket)
	return !ok || !t.refused
}

// dataMethods lists the full method names of every registered service that is not control plane.
func dataMethods(services map[string]grpc.ServiceInfo) map[string]struct{} {
	out := make(map[string]struct{})
	for name, info := range services {
		for _, m := range info.Methods {
			full := "/" + name + "/" + m.Name
			if !isControl(full) {
				out[full] = struct{}{}
			}
		}
	}
	return out
}

var _ stats.Handler = admission{}
