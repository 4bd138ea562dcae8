package auth

import (
	"errors"
	"fmt"
	"strings"

	"github.com/prism-gateway/plugins/core/apierr"
	"github.com/prism-gateway/plugins/core/config"
)

// Op is one operation (a method name) as a bit, so a policy's operations are one mask.
type Op uint32

// OpNone is a method that no policy can name: only * grants it.
const OpNone Op = 0

// The operation groups policies may name besides method names.
var groups = map[string][]string{
	"read":  {"Get", "Scan", "MGet", "Subscribe", "Tail"},
	"write": {"Put", "Delete", "Set", "MSet", "Expire", "Publish", "PublishStream"},
	"admin": {"Drain", "Reload", "GetMetrics", "GetInfo"},
}

// opBits numbers every method of the data abstractions and the control plane (DESIGN §2, §3).
var opBits = func() map[string]Op {
	m := map[string]Op{}
	for _, g := range []string{"read", "write", "admin"} {
		for _, name := range groups[g] {
			if _, ok := m[name]; !ok {
				m[name] = Op(1) << len(m)
			}
		}
	}
	return m
}()

// OpOf returns the operation of a method name ("Get"); OpNone for a method no group lists.
func OpOf(method string) Op { return opBits[method] }

// Policies is a compiled auth.policies list. The zero value (and nil) allows everything.
type Policies struct {
	rules []rule
}

type rule struct {
	name       string
	identities []glob
	ops        Op
	allOps     bool
	namespaces []glob
}

// Compile checks and compiles policies. Errors name the policy's config path.
func Compile(policies []config.PolicyConfig) (*Policies, error) {
	p := &Policies{}
	var errs []error
	for i, pc := range policies {
		path := fmt.Sprintf("auth.policies[%d]", i)
		r := rule{name: pc.Name}
		if r.name == "" {
			r.name = path
		}
		for _, id := range pc.Identities {
			if id == "" {
				errs = append(errs, fmt.Errorf("%s.identities: empty glob", path))
			}
			r.identities = append(r.identities, compileGlob(id))
		}
		for _, op := range pc.Operations {
			switch {
			case op == "*":
				r.allOps = true
			case groups[op] != nil:
				for _, name := range groups[op] {
					r.ops |= opBits[name]
				}
			case opBits[op] != 0:
				r.ops |= opBits[op]
			default:
				errs = append(errs, fmt.Errorf("%s.operations: unknown operation %q (a method name, read, write, admin or *)", path, op))
			}
		}
		if len(pc.Namespaces) == 0 {
			r.namespaces = []glob{compileGlob("*")}
		}
		for _, ns := range pc.Namespaces {
			r.namespaces = append(r.namespaces, compileGlob(ns))
		}
		p.rules = append(p.rules, r)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return p, nil
}

// Enabled reports whether any policy exists, i.e. whether calls are checked at all.
func (p *Policies) Enabled() bool { return p != nil && len(p.rules) > 0 }

func (r *rule) grants(identity string, op Op) bool {
	if !r.allOps && (op == OpNone || r.ops&op == 0) {
		return false
	}
	return matchAny(r.identities, identity)
}

// Authorize allows identity to run method (whose operation is op) on every target namespace or
// topic (noun says which), or returns PERMISSION_DENIED naming the identity, the method and the
// first target not granted. Each target may be granted by a different policy.
func (p *Policies) Authorize(identity, method string, op Op, noun string, targets []string) error {
	if !p.Enabled() {
		return nil
	}
	if len(targets) == 0 {
		targets = noTargets
	}
	for _, target := range targets {
		granted := false
		for i := range p.rules {
			r := &p.rules[i]
			if r.grants(identity, op) && matchAny(r.namespaces, target) {
				granted = true
				break
			}
		}
		if !granted {
			return apierr.New(apierr.ErrPermissionDenied, "identity %q may not call %s on %s %q", identity, method, noun, target)
		}
	}
	return nil
}

var noTargets = []string{""}

// AuthorizeControl allows identity to run a control-plane method (Drain, Reload, GetMetrics,
// GetInfo), which has no namespace, or returns PERMISSION_DENIED.
func (p *Policies) AuthorizeControl(identity, method string, op Op) error {
	if !p.Enabled() {
		return nil
	}
	for i := range p.rules {
		if p.rules[i].grants(identity, op) {
			return nil
		}
	}
	return apierr.New(apierr.ErrPermissionDenied, "identity %q may not call %s (needs the admin grant)", identity, method)
}

// Names lists the policies' names, for logs.
func (p *Policies) Names() []string {
	if p == nil {
		return nil
	}
	out := make([]string, len(p.rules))
	for i, r := range p.rules {
		out[i] = r.name
	}
	return out
}

// String describes the policies without their contents.
func (p *Policies) String() string { return strings.Join(p.Names(), ",") }
