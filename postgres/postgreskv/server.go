package postgreskv

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	keyvaluev1 "github.com/prism-gateway/plugins/gen/prism/keyvalue/v1"
)

// kvStore is what the gRPC adapter and the purge loop need from a backend: *Store on
// PostgreSQL, or *SQLiteStore in dev mode. Requests arrive validated against the limits; errors
// come back as apierr kinds (ABORTED for a failed precondition, INVALID_ARGUMENT for a bad page
// token or a reused idempotency token, UNAVAILABLE for backend trouble).
type kvStore interface {
	// Put writes items atomically and returns their new versions in request order.
	Put(ctx context.Context, r PutRequest) ([]int64, error)
	// Delete removes items (all of the record when r.Keys is empty) and counts the live ones.
	Delete(ctx context.Context, r DeleteRequest) (int64, error)
	// Get returns one page of a record's live items in key order and the next page's token.
	Get(ctx context.Context, r GetRequest) ([]Item, string, error)
	// Scan returns one page of a namespace's live items in (id, key) order.
	Scan(ctx context.Context, r ScanRequest) ([]Record, string, error)
	// PurgeExpired and PurgeTokens delete up to limit expired items or idempotency tokens.
	PurgeExpired(ctx context.Context, limit int) (int64, error)
	PurgeTokens(ctx context.Context, limit int) (int64, error)
}

// server adapts Plugin to prism.keyvalue.v1.KeyValueService: it validates each request against
// the limits in force, then calls the Store.
type server struct {
	keyvaluev1.UnimplementedKeyValueServiceServer
	plugin *Plugin
}

// Put implements keyvaluev1.KeyValueServiceServer.
func (s *server) Put(ctx context.Context, req *keyvaluev1.PutRequest) (*keyvaluev1.PutResponse, error) {
	r, err := s.plugin.settings.Load().limits.put(req)
	if err != nil {
		return nil, err
	}
	st, err := s.plugin.store(ctx)
	if err != nil {
		return nil, err
	}
	versions, err := st.Put(ctx, r)
	if err != nil {
		return nil, err
	}
	resp := &keyvaluev1.PutResponse{Versions: make([]*keyvaluev1.ItemVersion, len(r.Items))}
	for i, it := range r.Items {
		resp.Versions[i] = &keyvaluev1.ItemVersion{Key: it.Key, Version: versions[i]}
	}
	return resp, nil
}

// Get implements keyvaluev1.KeyValueServiceServer.
func (s *server) Get(ctx context.Context, req *keyvaluev1.GetRequest) (*keyvaluev1.GetResponse, error) {
	r, err := s.plugin.settings.Load().limits.get(req)
	if err != nil {
		return nil, err
	}
	st, err := s.plugin.store(ctx)
	if err != nil {
		return nil, err
	}
	items, next, err := st.Get(ctx, r)
	if err != nil {
		return nil, err
	}
	return &keyvaluev1.GetResponse{Found: len(items) > 0, Items: toProtoItems(items), NextPageToken: next}, nil
}

// Delete implements keyvaluev1.KeyValueServiceServer.
func (s *server) Delete(ctx context.Context, req *keyvaluev1.DeleteRequest) (*keyvaluev1.DeleteResponse, error) {
	r, err := s.plugin.settings.Load().limits.delete(req)
	if err != nil {
		return nil, err
	}
	st, err := s.plugin.store(ctx)
	if err != nil {
		return nil, err
	}
	n, err := st.Delete(ctx, r)
	if err != nil {
		return nil, err
	}
	return &keyvaluev1.DeleteResponse{DeletedCount: n}, nil
}

// Scan implements keyvaluev1.KeyValueServiceServer.
func (s *server) Scan(ctx context.Context, req *keyvaluev1.ScanRequest) (*keyvaluev1.ScanResponse, error) {
	r, err := s.plugin.settings.Load().limits.scan(req)
	if err != nil {
		return nil, err
	}
	st, err := s.plugin.store(ctx)
	if err != nil {
		return nil, err
	}
	records, next, err := st.Scan(ctx, r)
	if err != nil {
		return nil, err
	}
	// A page's messages come from one allocation per kind rather than one per record and item.
	n := 0
	for _, rec := range records {
		n += len(rec.Items)
	}
	a := newItemAlloc(n)
	resp := &keyvaluev1.ScanResponse{Records: make([]*keyvaluev1.Record, len(records)), NextPageToken: next}
	recs := make([]keyvaluev1.Record, len(records))
	for i, rec := range records {
		r := &recs[i]
		r.Id, r.Items = rec.ID, a.items(rec.Items)
		resp.Records[i] = r
	}
	return resp, nil
}

func toProtoItems(items []Item) []*keyvaluev1.Item {
	return newItemAlloc(len(items)).items(items)
}

// itemAlloc hands out the Item messages of one response from shared arrays.
type itemAlloc struct {
	msgs []keyvaluev1.Item
	ptrs []*keyvaluev1.Item
	ts   []timestamppb.Timestamp
	// tsChunk is the size of the last array ts came from.
	tsChunk int
}

func newItemAlloc(n int) *itemAlloc {
	return &itemAlloc{msgs: make([]keyvaluev1.Item, n), ptrs: make([]*keyvaluev1.Item, n)}
}

// items converts items into the next len(items) messages.
func (a *itemAlloc) items(items []Item) []*keyvaluev1.Item {
	out := a.ptrs[:len(items):len(items)]
	a.ptrs = a.ptrs[len(items):]
	for i, it := range items {
		m := &a.msgs[i]
		m.Key, m.Value, m.Version = it.Key, it.Value, it.Version
		if !it.ExpireTime.IsZero() {
			m.ExpireTime = a.timestamp(it.ExpireTime)
		}
		out[i] = m
	}
	a.msgs = a.msgs[len(items):]
	return out
}

// timestamp is timestamppb.New from a shared array, grown by doubling: few items expire.
func (a *itemAlloc) timestamp(t time.Time) *timestamppb.Timestamp {
	if len(a.ts) == 0 {
		a.tsChunk = min(max(2*a.tsChunk, 8), len(a.msgs)) // msgs still holds this item
		a.ts = make([]timestamppb.Timestamp, a.tsChunk)
	}
	ts := &a.ts[0]
	a.ts = a.ts[1:]
	ts.Seconds, ts.Nanos = t.Unix(), int32(t.Nanosecond())
	return ts
}

var _ keyvaluev1.KeyValueServiceServer = (*server)(nil)
