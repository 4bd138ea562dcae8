package benchkit

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"

	"github.com/prism-gateway/plugins/conformance/securitytest"
)

// SecurityClientCN is the identity of the client certificate the security case presents; its
// policy grants this name read and write on the bench namespace or topic.
const SecurityClientCN = "prism-bench-client"

// SecuritySpec is the security case of one benchmark: the plugin's single-item call at
// concurrency 1, run against three plugins at once (plaintext, mTLS, mTLS + one policy + audit
// to a file) in alternating slices, so load from elsewhere falls on all three alike.
type SecuritySpec struct {
	// Plugin is the plugin as the benchmark starts it; the case adds the tls.* and auth.* keys.
	Plugin PluginSpec
	// Name labels the call in the table, e.g. "Get 1KiB".
	Name string
	// Namespace is the namespace or topic the policy grants.
	Namespace string
	// Op makes the call on one plugin's connection.
	Op func(conn grpc.ClientConnInterface) Op
	// Duration is the measured time per mode; Warmup the unmeasured time before it.
	Duration, Warmup time.Duration
}

// securityRounds is how many alternating slices the security case splits each mode's time into.
// The difference it reports is a few microseconds out of hundreds, so the slices are short and
// many: a burst of load from elsewhere on the machine then falls on all three modes alike.
const securityRounds = 16

// RunSecurity measures spec's call in the three modes and prints p50/p99 for each and what auth
// plus audit adds over mTLS alone. It never judges the numbers; it fails only if it cannot run.
func RunSecurity(ctx context.Context, out io.Writer, spec SecuritySpec) error {
	dir, err := os.MkdirTemp("", "prism-bench-security-")
	if err != nil {
		return fmt.Errorf("make certificate directory: %w", err)
	}
	defer func() { _ = os.RemoveAll(dir) }()
	pki, err := writePKI(dir)
	if err != nil {
		return err
	}
	auditFile := filepath.Join(dir, "audit.log")
	tlsEnv := map[string]string{
		"PRISM_TLS_ENABLED":        "true",
		"PRISM_TLS_CERT_FILE":      pki.certFile,
		"PRISM_TLS_KEY_FILE":       pki.keyFile,
		"PRISM_TLS_CLIENT_AUTH":    "require",
		"PRISM_TLS_CLIENT_CA_FILE": pki.caFile,
	}
	policyEnv := map[string]string{
		"PRISM_AUTH_POLICIES": fmt.Sprintf("[{name: bench, identities: [%q], operations: [read, write], namespaces: [%q]}]",
			SecurityClientCN, spec.Namespace),
	}
	auditEnv := map[string]string{
		"PRISM_AUTH_AUDIT_ENABLED": "true",
		"PRISM_AUTH_AUDIT_OUTPUT":  auditFile,
	}
	modes := []struct {
		name string
		env  []map[string]string
		tls  *tls.Config
	}{
		{name: "plaintext"},
		{name: "mTLS", env: []map[string]string{tlsEnv}, tls: pki.client},
		{name: "mTLS+policy+audit", env: []map[string]string{tlsEnv, policyEnv, auditEnv}, tls: pki.client},
		// The two parts on their own, to say which one costs what.
		{name: "mTLS+policy", env: []map[string]string{tlsEnv, policyEnv}, tls: pki.client},
		{name: "mTLS+audit", env: []map[string]string{tlsEnv, auditEnv}, tls: pki.client},
	}
	ops := make([]Op, len(modes))
	for i, m := range modes {
		ps := spec.Plugin
		ps.Env = map[string]string{}
		for k, v := range spec.Plugin.Env {
			ps.Env[k] = v
		}
		for _, e := range m.env {
			for k, v := range e {
				ps.Env[k] = v
			}
		}
		ps.ClientTLS = m.tls
		conn, stop, err := StartPlugin(ctx, ps)
		if err != nil {
			return fmt.Errorf("%s: %w", m.name, err)
		}
		defer stop()
		ops[i] = spec.Op(conn)
		if _, err := Loop(ctx, ops[i], 1, spec.Warmup); err != nil {
			return fmt.Errorf("%s warmup: %w", m.name, err)
		}
	}
	samples := make([]Sample, len(modes))
	for range securityRounds {
		for i, m := range modes {
			s, err := Loop(ctx, ops[i], 1, spec.Duration/securityRounds)
			if err != nil {
				return fmt.Errorf("%s: %w", m.name, err)
			}
			samples[i].Merge(s)
		}
	}
	results := make([]Result, len(modes))
	for i := range samples {
		results[i] = samples[i].Result(1)
	}
	auditBytes := int64(0)
	if fi, err := os.Stat(auditFile); err == nil {
		auditBytes = fi.Size()
	}

	_, _ = fmt.Fprintf(out, "\nsecurity: %s at conc 1, %s per mode, %d plugins side by side in alternating slices\n", spec.Name, spec.Duration, len(modes))
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	_, _ = fmt.Fprintln(tw, "mode\tcalls\tp50\tp99\t")
	for i, m := range modes {
		_, _ = fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t\n", m.name, len(samples[i].Lat), Micros(results[i].P50), Micros(results[i].P99))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, _ = fmt.Fprintf(out, "mTLS adds %s p50 over plaintext\n", Micros(results[1].P50-results[0].P50))
	_, _ = fmt.Fprintf(out, "auth+audit adds %s p50 over mTLS (target <= 10us; policy alone %s, audit alone %s); audit file %d bytes\n",
		Micros(results[2].P50-results[1].P50), Micros(results[3].P50-results[1].P50), Micros(results[4].P50-results[1].P50), auditBytes)
	return nil
}

// benchPKI is the security case's CA, server certificate files and client TLS config.
type benchPKI struct {
	certFile, keyFile, caFile string
	client                    *tls.Config
}

// writePKI issues a CA, a server certificate for 127.0.0.1 and a client certificate for
// SecurityClientCN with the conformance suite's helper, and writes the server side to dir.
func writePKI(dir string) (p benchPKI, err error) {
	tb := &pkiTB{}
	defer func() {
		if r := recover(); r != nil {
			if r != tb {
				panic(r)
			}
			err = fmt.Errorf("issue benchmark certificates: %w", tb.err)
		}
	}()
	ca := securitytest.NewCA(tb, "prism bench CA")
	cert, key := ca.Issue(tb, securitytest.Leaf{CN: "plugin", Server: true})
	clientCert, clientKey := ca.Issue(tb, securitytest.Leaf{CN: SecurityClientCN})
	p = benchPKI{
		certFile: filepath.Join(dir, "tls.crt"),
		keyFile:  filepath.Join(dir, "tls.key"),
		caFile:   filepath.Join(dir, "ca.crt"),
		client:   securitytest.ClientTLS(tb, ca.PEM, clientCert, clientKey),
	}
	for path, data := range map[string][]byte{p.certFile: cert, p.keyFile: key, p.caFile: ca.PEM} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return benchPKI{}, fmt.Errorf("write %s: %w", path, err)
		}
	}
	return p, nil
}

// pkiTB lets the test-support PKI helper run outside a test: a failed check records its message
// and FailNow unwinds to writePKI, which turns it into an error. Only the methods the helper's
// checks call are provided; the embedded nil testing.TB is never reached.
type pkiTB struct {
	testing.TB
	err error
}

func (t *pkiTB) Helper() {}

func (t *pkiTB) Errorf(format string, args ...any) { t.err = fmt.Errorf(format, args...) }

func (t *pkiTB) FailNow() { panic(t) }
