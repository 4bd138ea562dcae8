package postgreskv

import (
	"fmt"
	"regexp"
	"time"
	"unicode/utf8"

	"github.com/prism-gateway/plugins/core/apierr"
	keyvaluev1 "github.com/prism-gateway/plugins/gen/prism/keyvalue/v1"
)

// This file holds the checks requests pass before the database is touched; each error names the
// request field and the limit it broke, in apierr's wording.

// settings is the snapshot of what a Reload changes live: the request limits, and the
// backend's idempotency retention and purge settings. It is never modified once stored.
type settings struct {
	limits     *limits
	retention  time.Duration
	purgeEvery time.Duration
	purgeBatch int
}

func newSettings(b *BackendConfig, l *limits) *settings {
	return &settings{limits: l, retention: b.IdempotencyRetention, purgeEvery: b.PurgeInterval, purgeBatch: b.PurgeBatchSize}
}

// limits is a validated LimitsConfig ready to check requests, with the namespace rule compiled.
type limits struct {
	LimitsConfig
	namespace *regexp.Regexp // nil for the default apierr.NamespacePattern, checked without a regexp
}

func newLimits(cfg *LimitsConfig) (*limits, error) {
	l := &limits{LimitsConfig: *cfg}
	if cfg.NamespacePattern == apierr.NamespacePattern {
		return l, nil
	}
	re, err := regexp.Compile(cfg.NamespacePattern)
	if err != nil {
		return nil, fmt.Errorf("limits.namespace_pattern: %w", err)
	}
	l.namespace = re
	return l, nil
}

func (l *limits) checkNamespace(ns string) error {
	return apierr.Namespace(ns, l.namespace, "limits.namespace_pattern")
}

func (l *limits) checkID(field, id string) error {
	switch {
	case id == "" || len(id) > l.MaxIDBytes:
		return apierr.OutOfRange(field, len(id), 1, l.MaxIDBytes, "limits.max_id_bytes", "bytes")
	case !utf8.ValidString(id):
		return apierr.Invalid(field, "not valid UTF-8")
	}
	return nil
}

func (l *limits) checkKey(field string, key []byte) error {
	if len(key) == 0 || len(key) > l.MaxKeyBytes {
		return apierr.OutOfRange(field, len(key), 1, l.MaxKeyBytes, "limits.max_key_bytes", "bytes")
	}
	return nil
}

func (l *limits) checkKeys(keys [][]byte) error {
	if len(keys) > l.MaxItemsPerRequest {
		return apierr.TooLarge("keys", len(keys), l.MaxItemsPerRequest, "limits.max_items_per_request", "keys")
	}
	for i, k := range keys {
		if err := l.checkKey(fmt.Sprintf("keys[%d]", i), k); err != nil {
			return err
		}
	}
	return nil
}

func (l *limits) checkToken(token string) error {
	if len(token) > l.MaxIdempotencyTokenBytes {
		return apierr.TooLarge("idempotency_token", len(token), l.MaxIdempotencyTokenBytes, "limits.max_idempotency_token_bytes", "bytes")
	}
	if !utf8.ValidString(token) {
		return apierr.Invalid("idempotency_token", "not valid UTF-8")
	}
	return nil
}

func (l *limits) preconditions(pcs []*keyvaluev1.Precondition) ([]Precondition, error) {
	if len(pcs) > l.MaxPreconditions {
		return nil, apierr.TooLarge("preconditions", len(pcs), l.MaxPreconditions, "limits.max_preconditions", "preconditions")
	}
	out := make([]Precondition, len(pcs))
	for i, pc := range pcs {
		field := fmt.Sprintf("preconditions[%d]", i)
		if err := l.checkKey(field+".key", pc.GetKey()); err != nil {
			return nil, err
		}
		out[i].Key = pc.GetKey()
		switch c := pc.GetCondition().(type) {
		case *keyvaluev1.Precondition_Version:
			if c.Version < 1 {
				return nil, apierr.Invalid(field+".version", "must be positive, got %d (use absent to require a missing item)", c.Version)
			}
			out[i].Version = c.Version
		case *keyvaluev1.Precondition_Absent:
			if !c.Absent {
				return nil, apierr.Invalid(field+".absent", "false is not a condition; set true or use version")
			}
			out[i].Absent = true
		default:
			return nil, apierr.Invalid(field, "one of version or absent is required")
		}
	}
	return out, nil
}

func (l *limits) put(r *keyvaluev1.PutRequest) (PutRequest, error) {
	out := PutRequest{Namespace: r.GetNamespace(), ID: r.GetId(), IdempotencyToken: r.GetIdempotencyToken()}
	if err := l.checkNamespace(out.Namespace); err != nil {
		return out, err
	}
	if err := l.checkID("id", out.ID); err != nil {
		return out, err
	}
	items := r.GetItems()
	switch {
	case len(items) == 0:
		return out, apierr.Invalid("items", "at least one item is required")
	case len(items) > l.MaxItemsPerRequest:
		return out, apierr.TooLarge("items", len(items), l.MaxItemsPerRequest, "limits.max_items_per_request", "items")
	}
	seen := make(map[string]int, len(items))
	total := 0
	out.Items = make([]PutItem, len(items))
	for i, it := range items {
		field := fmt.Sprintf("items[%d]", i)
		if err := l.checkKey(field+".key", it.GetKey()); err != nil {
			return out, err
		}
		if first, dup := seen[string(it.GetKey())]; dup {
			return out, apierr.Invalid(field+".key", "duplicates items[%d].key", first)
		}
		seen[string(it.GetKey())] = i
		if n := len(it.GetValue()); n > l.MaxValueBytes {
			return out, apierr.TooLarge(field+".value", n, l.MaxValueBytes, "limits.max_value_bytes", "bytes")
		}
		total += len(it.GetKey()) + len(it.GetValue())
		out.Items[i] = PutItem{Key: it.GetKey(), Value: it.GetValue()}
		ttl, err := apierr.TTL(field+".ttl", it.GetTtl(), l.MaxTTL, "limits.max_ttl")
		if err != nil {
			return out, err
		}
		out.Items[i].TTL = ttl
	}
	if total > l.MaxRequestBytes {
		return out, apierr.TooLarge("items", total, l.MaxRequestBytes, "limits.max_request_bytes", "bytes of keys and values")
	}
	if err := l.checkToken(out.IdempotencyToken); err != nil {
		return out, err
	}
	pcs, err := l.preconditions(r.GetPreconditions())
	out.Preconditions = pcs
	return out, err
}

func (l *limits) delete(r *keyvaluev1.DeleteRequest) (DeleteRequest, error) {
	out := DeleteRequest{Namespace: r.GetNamespace(), ID: r.GetId(), Keys: r.GetKeys(), IdempotencyToken: r.GetIdempotencyToken()}
	if err := l.checkNamespace(out.Namespace); err != nil {
		return out, err
	}
	if err := l.checkID("id", out.ID); err != nil {
		return out, err
	}
	if err := l.checkKeys(out.Keys); err != nil {
		return out, err
	}
	if err := l.checkToken(out.IdempotencyToken); err != nil {
		return out, err
	}
	pcs, err := l.preconditions(r.GetPreconditions())
	out.Preconditions = pcs
	return out, err
}

func (l *limits) pageSize(n int32) (int, error) {
	switch {
	case n < 0:
		return 0, apierr.Invalid("page_size", "must not be negative, got %d", n)
	case n == 0:
		return l.DefaultPageSize, nil
	case int(n) > l.MaxPageSize:
		return 0, apierr.TooLarge("page_size", int(n), l.MaxPageSize, "limits.max_page_size", "items")
	}
	return int(n), nil
}

func (l *limits) get(r *keyvaluev1.GetRequest) (GetRequest, error) {
	out := GetRequest{
		Namespace: r.GetNamespace(), ID: r.GetId(), Keys: r.GetKeys(), PageToken: r.GetPageToken(),
		MaxBytes: int64(l.DefaultPageBytes), MaxItemBytes: int64(l.MaxKeyBytes + l.MaxValueBytes),
	}
	if err := l.checkNamespace(out.Namespace); err != nil {
		return out, err
	}
	if err := l.checkID("id", out.ID); err != nil {
		return out, err
	}
	if err := l.checkKeys(out.Keys); err != nil {
		return out, err
	}
	var err error
	out.PageSize, err = l.pageSize(r.GetPageSize())
	return out, err
}

func (l *limits) scan(r *keyvaluev1.ScanRequest) (ScanRequest, error) {
	out := ScanRequest{Namespace: r.GetNamespace(), IDPrefix: r.GetIdPrefix(), PageToken: r.GetPageToken()}
	if err := l.checkNamespace(out.Namespace); err != nil {
		return out, err
	}
	if out.IDPrefix != "" {
		if err := l.checkID("id_prefix", out.IDPrefix); err != nil {
			return out, err
		}
	}
	var err error
	if out.PageSize, err = l.pageSize(r.GetPageSize()); err != nil {
		return out, err
	}
	switch mb := r.GetMaxBytes(); {
	case mb < 0:
		return out, apierr.Invalid("max_bytes", "must not be negative, got %d", mb)
	case mb == 0:
		out.MaxBytes = int64(l.DefaultPageBytes)
	case mb > int64(l.MaxPageBytes):
		return out, apierr.TooLarge("max_bytes", mb, int64(l.MaxPageBytes), "limits.max_page_bytes", "bytes")
	default:
		out.MaxBytes = mb
	}
	return out, nil
}
