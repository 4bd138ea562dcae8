package postgreskv

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/prism-gateway/plugins/core/apierr"
	keyvaluev1 "github.com/prism-gateway/plugins/gen/prism/keyvalue/v1"
)

// FuzzValidateRequests decodes arbitrary bytes as each KeyValue request, as the gRPC layer would,
// and runs the plugin's validation with its default limits: it must accept the request or reject
// it with INVALID_ARGUMENT, never panic, and what it accepts must be within the limits.
func FuzzValidateRequests(f *testing.F) {
	seed := func(kind byte, m proto.Message) {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(kind, b)
	}
	seed(0, &keyvaluev1.PutRequest{Namespace: "demo", Id: "user:1", Items: []*keyvaluev1.PutItem{
		{Key: []byte("k"), Value: []byte("v"), Ttl: durationpb.New(1e9)},
	}, Preconditions: []*keyvaluev1.Precondition{{Key: []byte("k"), Condition: &keyvaluev1.Precondition_Version{Version: 3}}}})
	seed(0, &keyvaluev1.PutRequest{Namespace: "demo", Id: "x", Items: []*keyvaluev1.PutItem{
		{Key: []byte("a")}, {Key: []byte("a")},
	}})
	seed(0, &keyvaluev1.PutRequest{Namespace: "demo", Id: "x", Items: []*keyvaluev1.PutItem{
		{Key: []byte("k"), Ttl: &durationpb.Duration{Seconds: 315576000000}},
	}})
	seed(1, &keyvaluev1.GetRequest{Namespace: "demo", Id: "user:1", Keys: [][]byte{[]byte("k")}, PageSize: 5})
	seed(2, &keyvaluev1.DeleteRequest{Namespace: "demo", Id: "user:1", Preconditions: []*keyvaluev1.Precondition{
		{Key: []byte("k"), Condition: &keyvaluev1.Precondition_Absent{Absent: true}},
	}})
	seed(3, &keyvaluev1.ScanRequest{Namespace: "demo", IdPrefix: "user:", PageSize: 10, MaxBytes: 1 << 20})
	seed(3, &keyvaluev1.ScanRequest{Namespace: "Bad Namespace", MaxBytes: -1})

	cfg := DefaultLimits()
	l, err := newLimits(cfg)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, kind byte, raw []byte) {
		var verr error
		switch kind % 4 {
		case 0:
			var r keyvaluev1.PutRequest
			if proto.Unmarshal(raw, &r) != nil {
				return
			}
			var p PutRequest
			if p, verr = l.put(&r); verr == nil {
				checkAcceptedPut(t, cfg, p)
			}
		case 1:
			var r keyvaluev1.GetRequest
			if proto.Unmarshal(raw, &r) != nil {
				return
			}
			var g GetRequest
			if g, verr = l.get(&r); verr == nil && (g.PageSize < 1 || g.PageSize > cfg.MaxPageSize) {
				t.Fatalf("accepted page size %d outside 1..%d", g.PageSize, cfg.MaxPageSize)
			}
		case 2:
			var r keyvaluev1.DeleteRequest
			if proto.Unmarshal(raw, &r) != nil {
				return
			}
			_, verr = l.delete(&r)
		case 3:
			var r keyvaluev1.ScanRequest
			if proto.Unmarshal(raw, &r) != nil {
				return
			}
			var s ScanRequest
			if s, verr = l.scan(&r); verr == nil && (s.MaxBytes < 1 || s.MaxBytes > int64(cfg.MaxPageBytes)) {
				t.Fatalf("accepted max_bytes %d outside 1..%d", s.MaxBytes, cfg.MaxPageBytes)
			}
		}
		if verr != nil && apierr.Code(verr) != codes.InvalidArgument {
			t.Fatalf("rejection is %s, want InvalidArgument: %v", apierr.Code(verr), verr)
		}
	})
}

func checkAcceptedPut(t *testing.T, cfg *LimitsConfig, p PutRequest) {
	t.Helper()
	if len(p.Items) == 0 || len(p.Items) > cfg.MaxItemsPerRequest {
		t.Fatalf("accepted %d items, limit %d", len(p.Items), cfg.MaxItemsPerRequest)
	}
	for i, it := range p.Items {
		if len(it.Key) == 0 || len(it.Key) > cfg.MaxKeyBytes || len(it.Value) > cfg.MaxValueBytes {
			t.Fatalf("accepted item %d with key %d bytes, value %d bytes", i, len(it.Key), len(it.Value))
		}
		if it.TTL < 0 || it.TTL > apierr.MaxTTL || (cfg.MaxTTL > 0 && it.TTL > cfg.MaxTTL) {
			t.Fatalf("accepted item %d with ttl %s", i, it.TTL)
		}
	}
}

// FuzzPageToken mints and opens tokens: a minted token gives back exactly its position, and an
// arbitrary string opens only if it is the token minted for the same request and position.
func FuzzPageToken(f *testing.F) {
	tokens := pageTokens{key: []byte("0123456789abcdef0123456789abcdef")}
	bind := binding('s', []byte("ns"), []byte("prefix"))
	f.Add([]byte("rec"), []byte("key"), "")
	f.Add([]byte{}, []byte{0xff, 0x00}, "AQ")
	f.Add([]byte("a\x00b"), []byte{}, tokens.mint(bind, position{id: []byte("x"), key: []byte("y")}))
	f.Fuzz(func(t *testing.T, id, key []byte, token string) {
		pos := position{id: id, key: key}
		minted := tokens.mint(bind, pos)
		got, err := tokens.open(bind, minted)
		if err != nil || !bytes.Equal(got.id, id) || !bytes.Equal(got.key, key) {
			t.Fatalf("round trip of %q/%q gave %q/%q, %v", id, key, got.id, got.key, err)
		}
		if token == minted {
			return
		}
		// Any other token must fail with errBadToken unless it is exactly what mint makes for the
		// position it carries (forging one would need the key).
		other, err := tokens.open(bind, token)
		switch {
		case err != nil && !errors.Is(err, errBadToken):
			t.Fatalf("open of a foreign token failed with %v, want errBadToken", err)
		case err == nil && tokens.mint(bind, other) != token:
			t.Fatalf("token %q opened but is not the one minted for its position", token)
		}
	})
}
