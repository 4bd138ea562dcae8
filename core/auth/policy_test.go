package auth_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"

	"github.com/prism-gateway/plugins/core/apierr"
	"github.com/prism-gateway/plugins/core/auth"
	"github.com/prism-gateway/plugins/core/config"
	keyvaluev1 "github.com/prism-gateway/plugins/gen/prism/keyvalue/v1"
	streamv1 "github.com/prism-gateway/plugins/gen/prism/stream/v1"
)

var testPolicies = []config.PolicyConfig{
	{Name: "orders-readers", Identities: []string{"spiffe://prod/ns/orders/*"}, Operations: []string{"read"}, Namespaces: []string{"orders.*"}},
	{Name: "orders-writer", Identities: []string{"spiffe://prod/ns/orders/sa/writer"}, Operations: []string{"write"}, Namespaces: []string{"orders.*"}},
	{Name: "ops", Identities: []string{"ops-*"}, Operations: []string{"admin", "Get"}},
}

func TestAuthorize(t *testing.T) {
	p, err := auth.Compile(testPolicies)
	require.NoError(t, err)
	tests := []struct {
		name, identity, method string
		targets                []string
		allowed                bool
	}{
		{"a reader reads its namespaces", "spiffe://prod/ns/orders/sa/api", "Get", []string{"orders.eu"}, true},
		{"a reader may not write", "spiffe://prod/ns/orders/sa/api", "Put", []string{"orders.eu"}, false},
		{"a reader may not read other namespaces", "spiffe://prod/ns/orders/sa/api", "Get", []string{"billing"}, false},
		{"the writer writes through a second policy", "spiffe://prod/ns/orders/sa/writer", "Publish", []string{"orders.eu"}, true},
		{"every topic must be granted", "spiffe://prod/ns/orders/sa/api", "Subscribe", []string{"orders.eu", "billing"}, false},
		{"several granted topics", "spiffe://prod/ns/orders/sa/api", "Subscribe", []string{"orders.eu", "orders.us"}, true},
		{"a method name grant without namespaces covers all", "ops-alice", "Get", []string{"anything"}, true},
		{"unknown identities get nothing", "mallory", "Get", []string{"orders.eu"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := p.Authorize(tt.identity, tt.method, auth.OpOf(tt.method), "namespace", tt.targets)
			if tt.allowed {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Equal(t, codes.PermissionDenied, apierr.Code(err))
			assert.Contains(t, err.Error(), tt.identity)
			assert.Contains(t, err.Error(), tt.method)
		})
	}
	assert.NoError(t, p.AuthorizeControl("ops-bob", "Drain", auth.OpOf("Drain")))
	assert.Error(t, p.AuthorizeControl("spiffe://prod/ns/orders/sa/api", "Reload", auth.OpOf("Reload")))
}

func TestNoPoliciesAllowEverything(t *testing.T) {
	p, err := auth.Compile(nil)
	require.NoError(t, err)
	assert.False(t, p.Enabled())
	assert.NoError(t, p.Authorize("anyone", "Put", auth.OpOf("Put"), "namespace", []string{"x"}))
}

func TestCompileRejectsUnknownOperations(t *testing.T) {
	_, err := auth.Compile([]config.PolicyConfig{{Identities: []string{"*"}, Operations: []string{"reed"}}})
	require.ErrorContains(t, err, `auth.policies[0].operations: unknown operation "reed"`)
}

func TestTargetsFindNamespacesAndTopicsByReflection(t *testing.T) {
	got, noun, ok := auth.Targets(&keyvaluev1.GetRequest{Namespace: "orders", Id: "x"}, nil)
	assert.True(t, ok)
	assert.Equal(t, "namespace", noun)
	assert.Equal(t, []string{"orders"}, got)
	got, noun, _ = auth.Targets(&streamv1.SubscribeRequest{Subscription: &streamv1.Subscription{Topics: []string{"a", "b"}}}, nil)
	assert.Equal(t, "topic", noun)
	assert.Equal(t, []string{"a", "b"}, got)
	got, _, _ = auth.Targets(&streamv1.SubscribeRequest{}, nil)
	assert.Empty(t, got, "an ack message names no topic")
}

// BenchmarkAuthorize measures the decision path of an allowed call among 20 policies.
func BenchmarkAuthorize(b *testing.B) {
	var policies []config.PolicyConfig
	for i := range 19 {
		policies = append(policies, config.PolicyConfig{
			Identities: []string{fmt.Sprintf("spiffe://prod/ns/team%d/*", i)},
			Operations: []string{"read", "write"}, Namespaces: []string{fmt.Sprintf("team%d.*", i)},
		})
	}
	policies = append(policies, testPolicies[0])
	p, err := auth.Compile(policies)
	require.NoError(b, err)
	req := &keyvaluev1.GetRequest{Namespace: "orders.eu", Id: "x"}
	var buf [4]string
	op := auth.OpOf("Get")
	b.ReportAllocs()
	for b.Loop() {
		targets, noun, _ := auth.Targets(req, buf[:0])
		if err := p.Authorize("spiffe://prod/ns/orders/sa/api", "Get", op, noun, targets); err != nil {
			b.Fatal(err)
		}
	}
}
