package rediscache

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/prism-gateway/plugins/core/apierr"
)

// FuzzValidateRequestFields runs the cache's request checks on arbitrary namespaces, keys and
// TTLs with the default limits: each value is accepted or rejected with INVALID_ARGUMENT, never a
// panic; an accepted TTL is stored as an expiry (never "keep forever"), and an accepted
// namespace and key map to one Redis key under the prefix.
func FuzzValidateRequestFields(f *testing.F) {
	f.Add("demo", "greeting", int64(300), int32(0))
	f.Add("Demo", "", int64(-1), int32(0))
	f.Add("a.b-c_d", "\xff\xfe", int64(0), int32(1))
	f.Add("demo", "k", int64(315576000000), int32(0))
	f.Add("demo", "k", int64(9223372036), int32(999999999))
	f.Add("demo", "k", int64(0), int32(-5))
	s := newSettings(defaultBackend(), defaultLimits())
	f.Fuzz(func(t *testing.T, ns, key string, seconds int64, nanos int32) {
		check := func(what string, err error) bool {
			t.Helper()
			if err != nil && apierr.Code(err) != codes.InvalidArgument {
				t.Fatalf("%s rejected with %s, want InvalidArgument: %v", what, apierr.Code(err), err)
			}
			return err == nil
		}
		nsOK := check("namespace", checkNamespace(ns))
		keyOK := check("key", s.checkKey("key", key))
		if keys, err := s.checkKeys(ns, []string{key, key}); check("keys", err) {
			if len(keys) != 2 || keys[0] != s.redisKey(ns, key) {
				t.Fatalf("checkKeys(%q, %q) = %q", ns, key, keys)
			}
		}
		if nsOK && keyOK && s.redisKey(ns, key)[:len(s.keyPrefix)] != s.keyPrefix {
			t.Fatalf("key %q escapes the prefix", s.redisKey(ns, key))
		}
		ttl, err := s.ttl("ttl", &durationpb.Duration{Seconds: seconds, Nanos: nanos})
		if check("ttl", err) && ttl > 0 {
			if stored := s.writeTTL(ttl); stored < time.Millisecond {
				t.Fatalf("accepted ttl %s would be stored as %s (no expiry)", ttl, stored)
			}
		}
	})
}
