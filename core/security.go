package core

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/prism-gateway/plugins/core/apierr"
	"github.com/prism-gateway/plugins/core/audit"
	"github.com/prism-gateway/plugins/core/auth"
	"github.com/prism-gateway/plugins/core/config"
)

// security is one generation of the inbound security settings: built whole by New or Reload and
// swapped in only once everything else in the reload has been accepted.
type security struct {
	policies     *auth.Policies
	jwt          *auth.JWTVerifier
	jwksRaw      []byte
	audit        *audit.Sink
	auditCfg     config.AuditConfig
	getInfoAdmin bool
}

// buildSecurity compiles policies, reads the JWKS file and opens the audit sink with opts. reuse,
// when its audit settings are the same, lends its sink instead of opening a new one.
func buildSecurity(cfg config.AuthConfig, reuse *security, opts audit.Options) (*security, error) {
	policies, err := auth.Compile(cfg.Policies)
	if err != nil {
		return nil, err
	}
	verifier, err := auth.LoadJWT(cfg.JWT)
	if err != nil {
		return nil, err
	}
	sec := &security{policies: policies, jwt: verifier, auditCfg: cfg.Audit, getInfoAdmin: cfg.GetInfoRequiresAdmin}
	if cfg.JWT.Enabled {
		sec.jwksRaw, _ = os.ReadFile(cfg.JWT.JWKSFile)
	}
	if reuse != nil && reuse.auditCfg == cfg.Audit {
		sec.audit = reuse.audit
		return sec, nil
	}
	if sec.audit, err = audit.Open(cfg.Audit, opts); err != nil {
		return nil, err
	}
	return sec, nil
}

// auditOptions are the settings of every audit sink the server opens: one Stats for all of them,
// and the server's log for write errors and dropped lines.
func (s *Server) auditOptions() audit.Options {
	return audit.Options{Stats: &s.auditStats, Log: s.logger().With("component", "audit")}
}

// registerAuditMetrics exports the audit sinks' losses.
func (s *Server) registerAuditMetrics() {
	s.registry.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "prism_audit_lines_dropped_total",
			Help: "Audit lines lost: the audit output fell behind (buffer full), a write failed, or the line came after shutdown.",
		}, func() float64 { return float64(s.auditStats.Dropped()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "prism_audit_write_errors_total",
			Help: "Writes to the audit output that failed.",
		}, func() float64 { return float64(s.auditStats.WriteErrors()) }),
	)
}

// securityFiles are the files whose contents a generation was built from, to watch.
func securityFiles(cfg *config.Config) []string {
	var files []string
	if cfg.TLS.Enabled {
		files = append(files, cfg.TLS.CertFile, cfg.TLS.KeyFile)
		if cfg.TLS.ClientAuth == "require" {
			files = append(files, cfg.TLS.ClientCAFile)
		}
	}
	if cfg.Auth.JWT.Enabled {
		files = append(files, cfg.Auth.JWT.JWKSFile)
	}
	return files
}

func (sec *security) sameKeys(other *security) bool { return bytes.Equal(sec.jwksRaw, other.jwksRaw) }

// openMethods need no identity and are not audited: health and reflection always, GetInfo
// unless auth.get_info_requires_admin.
func (sec *security) open(fullMethod string) bool {
	if strings.HasPrefix(fullMethod, "/grpc.health.v1.") || strings.HasPrefix(fullMethod, "/grpc.reflection.") {
		return true
	}
	return fullMethod == "/prism.plugin.v1.PluginService/GetInfo" && !sec.getInfoAdmin
}

// authenticate names the caller: a valid bearer token's subject, else the client certificate's
// identity, else anonymous. Anonymous callers are refused once policies exist. p is the call's
// peer, nil when there is none.
func (sec *security) authenticate(ctx context.Context, p *peer.Peer) (auth.Identity, error) {
	id := auth.Identity{Name: auth.Anonymous, Source: auth.SourceAnonymous}
	if p != nil {
		if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
			id = auth.FromCertificate(ti.State.PeerCertificates[0])
		}
	}
	if sec.jwt != nil {
		if values := metadata.ValueFromIncomingContext(ctx, "authorization"); len(values) > 0 {
			token, ok := strings.CutPrefix(values[0], "Bearer ")
			if !ok {
				token, ok = strings.CutPrefix(values[0], "bearer ")
			}
			if !ok {
				return id, apierr.New(apierr.ErrUnauthenticated, "authorization metadata must be \"Bearer <token>\"")
			}
			sub, err := sec.jwt.Verify(token, time.Now())
			if err != nil {
				return id, err
			}
			id = auth.Identity{Name: sub, Source: auth.SourceJWT}
		}
	}
	if sec.policies.Enabled() && id.Source == auth.SourceAnonymous {
		return id, apierr.New(apierr.ErrUnauthenticated, "no verified client certificate or bearer token")
	}
	return id, nil
}

// authorize checks one message of a call (the request of a unary call, each received message of
// a stream) and returns the namespaces or topics it addresses.
func (sec *security) authorize(id auth.Identity, fullMethod string, msg any, buf []string) ([]string, string, error) {
	if strings.HasPrefix(fullMethod, "/prism.plugin.v1.") {
		_, method := splitMethod(fullMethod)
		return nil, "", sec.policies.AuthorizeControl(id.Name, method, auth.OpOf(method))
	}
	targets, noun, _ := auth.Targets(msg, buf)
	if noun == "" {
		noun = "namespace"
	}
	_, method := splitMethod(fullMethod)
	return targets, noun, sec.policies.Authorize(id.Name, method, auth.OpOf(method), noun, targets)
}

// requestIDHeader is the metadata key of the request id, in calls and in response headers.
const requestIDHeader = "x-request-id"

// maxRequestIDLen bounds a caller's request id; a longer one is replaced by a generated one.
const maxRequestIDLen = 128

// requestID is the caller's x-request-id, else a new random one.
func requestID(ctx context.Context) string {
	if v := metadata.ValueFromIncomingContext(ctx, requestIDHeader); len(v) > 0 && v[0] != "" && len(v[0]) <= maxRequestIDLen {
		return v[0]
	}
	return newRequestID()
}

// newRequestID is 128 random bits in hex. It correlates log lines and is no secret, so it comes
// from the runtime's fast per-thread generator rather than crypto/rand.
func newRequestID() string {
	var raw [16]byte
	binary.BigEndian.PutUint64(raw[:8], rand.Uint64()) //nolint:gosec // a correlation id, not a secret
	binary.BigEndian.PutUint64(raw[8:], rand.Uint64()) //nolint:gosec // a correlation id, not a secret
	var b [32]byte
	hex.Encode(b[:], raw[:])
	return string(b[:])
}

// returnRequestID sends the request id back in the response header. The caller's own id is
// echoed too, so a client can rely on the header whoever made the id.
func returnRequestID(ctx context.Context, id string) {
	_ = grpc.SetHeader(ctx, metadata.MD{requestIDHeader: []string{id}})
}

// securityUnary authenticates, authorizes and audits a unary call before the handler (and so
// the backend) sees it.
func (s *Server) securityUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	sec := s.sec.Load()
	if sec.open(info.FullMethod) {
		return handler(ctx, req)
	}
	start := time.Now()
	var ev audit.Event
	if sec.audit != nil {
		// Through a local: escape analysis is per variable, and ev must stay on the stack.
		rid := requestID(ctx)
		returnRequestID(ctx, rid)
		ev.RequestID = rid
	}
	p, _ := peer.FromContext(ctx)
	var buf [4]string
	id, err := sec.authenticate(ctx, p)
	var targets []string
	if err == nil {
		targets, ev.Noun, err = sec.authorize(id, info.FullMethod, req, buf[:0])
	}
	var resp any
	if err == nil {
		resp, err = handler(ctx, req)
	}
	if sec.audit != nil {
		ev.Time, ev.Kind, ev.Method = start, audit.KindCall, info.FullMethod
		ev.Identity, ev.Source, ev.Targets = id.Name, string(id.Source), targets
		if p != nil {
			ev.Peer = audit.PeerOf(p.Addr)
		}
		ev.RequestItems, ev.ResponseItems = audit.Count(req), audit.Count(resp)
		code := apierr.Code(err)
		ev.Code, ev.Duration = code.String(), time.Since(start)
		if code == codes.Unauthenticated || code == codes.PermissionDenied {
			ev.Error = err.Error()
		}
		// The current sink: a Reload may have reopened the file while this call ran.
		s.sec.Load().audit.Write(&ev)
	}
	return resp, err
}

// securityStream does the same for streams: every received message that names a namespace or
// topic is checked (the Subscribe subscription, each PublishStream request, the Tail request).
func (s *Server) securityStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	sec := s.sec.Load()
	if sec.open(info.FullMethod) {
		return handler(srv, ss)
	}
	ctx := ss.Context()
	start := time.Now()
	as := &auditedStream{ServerStream: ss, sec: sec, method: info.FullMethod}
	as.ev.Method = info.FullMethod
	p, _ := peer.FromContext(ctx)
	if sec.audit != nil {
		as.ev.RequestID = requestID(ctx)
		if p != nil {
			as.ev.Peer = audit.PeerOf(p.Addr)
		}
		_ = ss.SetHeader(metadata.MD{requestIDHeader: []string{as.ev.RequestID}})
	}
	var err error
	as.id, err = sec.authenticate(ctx, p)
	if err == nil {
		err = handler(srv, as)
		// A handler's reader goroutine may still be in RecvMsg after the handler returned.
		as.mu.Lock()
		if as.denied != nil {
			err = as.denied
		}
		as.mu.Unlock()
	}
	if sec.audit != nil {
		as.mu.Lock()
		ev := as.ev
		as.mu.Unlock()
		ev.Time, ev.Kind = start, audit.KindStreamEnd
		ev.Identity, ev.Source = as.id.Name, string(as.id.Source)
		code := apierr.Code(err)
		ev.Code, ev.Duration = code.String(), time.Since(start)
		if code == codes.Unauthenticated || code == codes.PermissionDenied {
			ev.Error = err.Error()
		}
		s.sec.Load().audit.Write(&ev)
	}
	return err
}

// auditedStream authorizes received messages and counts what passes through.
type auditedStream struct {
	grpc.ServerStream
	sec    *security
	method string
	id     auth.Identity
	// mu guards what RecvMsg and SendMsg update: they may run on different goroutines, and
	// securityStream reads it when the handler returns.
	mu      sync.Mutex
	ev      audit.Event
	started bool
	denied  error
	buf     [4]string // the targets of the message being checked
}

func (a *auditedStream) RecvMsg(m any) error {
	if err := a.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.ev.RequestMessages++
	targets, noun, err := a.sec.authorize(a.id, a.method, m, a.buf[:0])
	if len(targets) > 0 || (err != nil && a.ev.Targets == nil) {
		a.ev.Noun = noun
		a.ev.Targets = appendNew(a.ev.Targets, targets)
	}
	if err != nil {
		a.denied = err
		return err
	}
	if a.sec.audit != nil {
		a.ev.RequestItems += audit.Count(m)
		if !a.started {
			a.started = true
			ev := a.ev
			ev.Time, ev.Kind = time.Now(), audit.KindStreamStart
			ev.Identity, ev.Source = a.id.Name, string(a.id.Source)
			a.sec.audit.Write(&ev)
		}
	}
	return nil
}

func (a *auditedStream) SendMsg(m any) error {
	err := a.ServerStream.SendMsg(m)
	if err == nil && a.sec.audit != nil {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.ev.ResponseMessages++
		a.ev.ResponseItems += audit.Count(m)
	}
	return err
}

// appendNew adds the targets not yet listed.
func appendNew(have, add []string) []string {
	for _, t := range add {
		found := false
		for _, h := range have {
			if h == t {
				found = true
				break
			}
		}
		if !found {
			have = append(have, t)
		}
	}
	return have
}
