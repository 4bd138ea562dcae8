package rediscache

import (
	"context"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/prism-gateway/plugins/core/apierr"
	cachev1 "github.com/prism-gateway/plugins/gen/prism/cache/v1"
)

// server adapts Plugin to prism.cache.v1.CacheService: it validates each request against the
// limits in force, maps it onto Redis keys and hands it to the store.
type server struct {
	cachev1.UnimplementedCacheServiceServer
	plugin *Plugin
}

// Get implements cachev1.CacheServiceServer.
func (s *server) Get(ctx context.Context, req *cachev1.GetRequest) (*cachev1.GetResponse, error) {
	cfg := s.plugin.settings.Load()
	ns := req.GetNamespace()
	if err := checkNamespace(ns); err != nil {
		return nil, err
	}
	if err := cfg.checkKey("key", req.GetKey()); err != nil {
		return nil, err
	}
	st, err := s.plugin.store()
	if err != nil {
		return nil, err
	}
	res, err := st.get(ctx, cfg.redisKey(ns, req.GetKey()))
	if err != nil {
		return nil, err
	}
	if !res.found {
		st.metrics.lookups(ns, 0, 1)
		return &cachev1.GetResponse{}, nil
	}
	st.metrics.lookups(ns, 1, 0)
	resp := &cachev1.GetResponse{Found: true, Value: res.value}
	if res.ttl > 0 {
		resp.Ttl = durationpb.New(res.ttl)
	}
	return resp, nil
}

// Set implements cachev1.CacheServiceServer.
func (s *server) Set(ctx context.Context, req *cachev1.SetRequest) (*cachev1.SetResponse, error) {
	cfg := s.plugin.settings.Load()
	ns := req.GetNamespace()
	if err := checkNamespace(ns); err != nil {
		return nil, err
	}
	if err := cfg.checkKey("key", req.GetKey()); err != nil {
		return nil, err
	}
	if err := cfg.checkValue("value", req.GetValue()); err != nil {
		return nil, err
	}
	ttl, err := cfg.ttl("ttl", req.GetTtl())
	if err != nil {
		return nil, err
	}
	if req.GetKeepTtl() && req.GetTtl() != nil {
		return nil, apierr.Invalid("ttl", "must be unset when keep_ttl is true")
	}
	var cond condition
	switch req.GetCondition() {
	case cachev1.Condition_CONDITION_UNSPECIFIED, cachev1.Condition_CONDITION_ALWAYS:
		cond = always
	case cachev1.Condition_CONDITION_IF_ABSENT:
		cond = ifAbsent
	case cachev1.Condition_CONDITION_IF_PRESENT:
		cond = ifPresent
	default:
		return nil, apierr.Invalid("condition", "must be CONDITION_ALWAYS, CONDITION_IF_ABSENT or CONDITION_IF_PRESENT, got %d", req.GetCondition())
	}
	st, err := s.plugin.store()
	if err != nil {
		return nil, err
	}
	// keep_ttl leaves the expiry to the existing key, so default_ttl does not apply to it.
	if !req.GetKeepTtl() {
		ttl = cfg.writeTTL(ttl)
	}
	stored, err := st.set(ctx, cfg.redisKey(ns, req.GetKey()), req.GetValue(), ttl, req.GetKeepTtl(), cond)
	if err != nil {
		return nil, err
	}
	return &cachev1.SetResponse{Stored: stored}, nil
}

// Delete implements cachev1.CacheServiceServer.
func (s *server) Delete(ctx context.Context, req *cachev1.DeleteRequest) (*cachev1.DeleteResponse, error) {
	cfg := s.plugin.settings.Load()
	keys, err := cfg.checkKeys(req.GetNamespace(), req.GetKeys())
	if err != nil {
		return nil, err
	}
	st, err := s.plugin.store()
	if err != nil {
		return nil, err
	}
	n, err := st.delete(ctx, keys)
	if err != nil {
		return nil, err
	}
	return &cachev1.DeleteResponse{DeletedCount: n}, nil
}

// MGet implements cachev1.CacheServiceServer.
func (s *server) MGet(ctx context.Context, req *cachev1.MGetRequest) (*cachev1.MGetResponse, error) {
	cfg := s.plugin.settings.Load()
	ns := req.GetNamespace()
	keys, err := cfg.checkKeys(ns, req.GetKeys())
	if err != nil {
		return nil, err
	}
	st, err := s.plugin.store()
	if err != nil {
		return nil, err
	}
	found, err := st.mget(ctx, keys)
	if err != nil {
		return nil, err
	}
	entries := make([]*cachev1.Entry, len(found))
	backing := make([]cachev1.Entry, len(found))
	hits, size := 0, 0
	for i, f := range found {
		e := &backing[i]
		e.Key, e.Found, e.Value = req.GetKeys()[i], f.found, f.value
		entries[i] = e
		if f.found {
			hits++
			size += len(f.value)
		}
	}
	st.metrics.lookups(ns, hits, len(found)-hits)
	if size > cfg.limits.MaxBatchBytes {
		return nil, apierr.New(apierr.ErrResourceExhausted,
			"mget: the values found total %d bytes, over limits.max_batch_bytes (%d); ask for fewer keys", size, cfg.limits.MaxBatchBytes)
	}
	return &cachev1.MGetResponse{Entries: entries}, nil
}

// MSet implements cachev1.CacheServiceServer.
func (s *server) MSet(ctx context.Context, req *cachev1.MSetRequest) (*cachev1.MSetResponse, error) {
	cfg := s.plugin.settings.Load()
	ns := req.GetNamespace()
	if err := checkNamespace(ns); err != nil {
		return nil, err
	}
	in := req.GetEntries()
	if err := cfg.checkCount("entries", len(in)); err != nil {
		return nil, err
	}
	entries := make([]msetEntry, len(in))
	keys := make([]string, len(in))
	size := 0
	for i, e := range in {
		// The field names are built only for an error, not for every entry.
		if err := cfg.checkKey("key", e.GetKey()); err != nil {
			return nil, cfg.checkKey(indexed("entries", i)+".key", e.GetKey())
		}
		if err := cfg.checkValue("value", e.GetValue()); err != nil {
			return nil, cfg.checkValue(indexed("entries", i)+".value", e.GetValue())
		}
		ttl, err := cfg.ttl("ttl", e.GetTtl())
		if err != nil {
			_, err = cfg.ttl(indexed("entries", i)+".ttl", e.GetTtl())
			return nil, err
		}
		size += len(e.GetKey()) + len(e.GetValue())
		keys[i] = e.GetKey()
		entries[i] = msetEntry{value: e.GetValue(), ttl: cfg.writeTTL(ttl)}
	}
	for i, k := range cfg.redisKeys(ns, keys) {
		entries[i].key = k
	}
	if size > cfg.limits.MaxBatchBytes {
		return nil, apierr.TooLarge("entries", size, cfg.limits.MaxBatchBytes, "limits.max_batch_bytes", "bytes of keys and values")
	}
	st, err := s.plugin.store()
	if err != nil {
		return nil, err
	}
	if err := st.mset(ctx, entries); err != nil {
		return nil, err
	}
	return &cachev1.MSetResponse{}, nil
}

// Expire implements cachev1.CacheServiceServer.
func (s *server) Expire(ctx context.Context, req *cachev1.ExpireRequest) (*cachev1.ExpireResponse, error) {
	cfg := s.plugin.settings.Load()
	ns := req.GetNamespace()
	if err := checkNamespace(ns); err != nil {
		return nil, err
	}
	if err := cfg.checkKey("key", req.GetKey()); err != nil {
		return nil, err
	}
	ttl, err := cfg.ttl("ttl", req.GetTtl())
	if err != nil {
		return nil, err
	}
	st, err := s.plugin.store()
	if err != nil {
		return nil, err
	}
	found, err := st.expire(ctx, cfg.redisKey(ns, req.GetKey()), expiry(ttl, cfg.jitter))
	if err != nil {
		return nil, err
	}
	return &cachev1.ExpireResponse{Found: found}, nil
}
