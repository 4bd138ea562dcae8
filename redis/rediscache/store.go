package rediscache

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/redis/go-redis/v9"

	"github.com/prism-gateway/plugins/core/apierr"
)

// persistScript removes an expiry and tells a missing key apart from one that had no expiry,
// which PERSIST alone cannot (it answers 0 for both).
var persistScript = redis.NewScript(`if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('PERSIST', KEYS[1])
return 1`)

// condition says when a set writes.
type condition int

const (
	always condition = iota
	ifAbsent
	ifPresent
)

// store runs the cache operations against one go-redis client. Keys handed to it are full Redis
// keys (prefix, namespace and key already joined).
type store struct {
	client redis.UniversalClient
	// pipe, when backend.auto_pipeline is on, batches the single-key commands of concurrent
	// calls (Get, Set, Expire) into shared round trips; nil sends each call on its own.
	pipe    *pipeliner
	cluster bool
	metrics *metrics
	// mgetKeyBytes is the reply bytes per key of the last MGet, which sizes the next one's
	// reply buffer.
	mgetKeyBytes atomic.Int64
}

// getResult is the outcome of a single-key read.
type getResult struct {
	found bool
	value []byte
	// ttl is the remaining time to live; 0 when the key has none.
	ttl time.Duration
}

// get reads a value and its remaining time to live in one MULTI/EXEC transaction, so the TTL
// belongs to the value returned (a GET then PTTL could straddle an expiry or another client's
// write). A transaction costs Redis far less than a Lua script doing the same (no script VM, no
// copy of the value into Lua and back), most of all for large values. One key is one hash slot,
// so it works on Redis Cluster as well.
func (s *store) get(ctx context.Context, key string) (getResult, error) {
	start := time.Now()
	var out getResult
	var err error
	if s.pipe != nil {
		out, err = s.getPipelined(ctx, key, true)
	}
	if s.pipe == nil || redirected(err) {
		// A redirected block did not run; the cluster client follows the redirect.
		out, err = s.getDirect(ctx, key)
	}
	s.metrics.observe(opGet, start, err)
	if err != nil {
		return getResult{}, backendError(ctx, "get", err)
	}
	return out, nil
}

// getDirect is get in a transaction of its own.
func (s *store) getDirect(ctx context.Context, key string) (getResult, error) {
	pipe := s.client.TxPipeline()
	value := pipe.Get(ctx, key)
	pttl := pipe.PTTL(ctx, key)
	_, err := pipe.Exec(ctx)
	// A command Redis refuses to queue (an ACL NOPERM, say) makes EXEC answer EXECABORT; the
	// command's own error says why.
	err = cmp.Or(value.Err(), pttl.Err(), err)
	if errors.Is(err, redis.Nil) {
		return getResult{}, nil
	}
	if err != nil {
		return getResult{}, err
	}
	return getResultOf(readOnlyBytes(value.Val()), pttl.Val()), nil
}

// getPipelined is get as a MULTI GET PTTL EXEC block inside a shared batch: the block is written
// in one piece on one connection, so other callers' commands cannot come between its parts.
func (s *store) getPipelined(ctx context.Context, key string, mayGoAlone bool) (getResult, error) {
	var exec *redis.SliceCmd
	var alone getResult
	// A Get with nothing to share a batch with runs as go-redis's own transaction: its replies
	// are read into typed commands, a little cheaper than the raw block.
	var direct func() error
	if mayGoAlone {
		direct = func() error {
			var err error
			alone, err = s.getDirect(ctx, key)
			return err
		}
	}
	err := s.pipe.do(ctx, key, false, direct,
		func() []redis.Cmder {
			exec = redis.NewSliceCmd(ctx, "exec")
			// A command Redis refuses to queue (an ACL NOPERM, say) makes EXEC answer
			// EXECABORT; the command's own error, earlier in the block, is the one reported.
			return []redis.Cmder{
				redis.NewStatusCmd(ctx, "multi"),
				redis.NewStatusCmd(ctx, "get", key),
				redis.NewStatusCmd(ctx, "pttl", key),
				exec,
			}
		})
	if err != nil || exec == nil {
		return alone, err
	}
	replies := exec.Val()
	if len(replies) != 2 {
		return getResult{}, fmt.Errorf("EXEC answered %d replies for GET and PTTL", len(replies))
	}
	var value string
	switch v := replies[0].(type) {
	case nil:
		return getResult{}, nil
	case error:
		// WRONGTYPE and the like are queued, then fail inside EXEC.
		return getResult{}, v
	case string:
		value = v
	default:
		return getResult{}, fmt.Errorf("GET answered %T", v)
	}
	ms, ok := replies[1].(int64)
	if !ok {
		return getResult{}, fmt.Errorf("PTTL answered %T", replies[1])
	}
	return getResultOf(readOnlyBytes(value), time.Duration(ms)*time.Millisecond), nil
}

func getResultOf(value []byte, pttl time.Duration) getResult {
	out := getResult{found: true, value: value}
	// PTTL answers -1 for a key without an expiry (and -2 for a missing one, impossible here).
	if pttl > 0 {
		out.ttl = pttl
	}
	return out
}

// set writes one key with a single SET command, so value, expiry and condition apply together.
// ttl 0 without keepTTL clears any old expiry, as SET does.
func (s *store) set(ctx context.Context, key string, value []byte, ttl time.Duration, keepTTL bool, cond condition) (bool, error) {
	start := time.Now()
	err := s.setOnce(ctx, key, value, ttl, keepTTL, cond)
	if errors.Is(err, redis.Nil) {
		// NX or XX did not hold: Redis answers a null reply.
		s.metrics.observe(opSet, start, nil)
		return false, nil
	}
	s.metrics.observe(opSet, start, err)
	if err != nil {
		return false, backendError(ctx, "set", err)
	}
	return true, nil
}

// setOnce sends one SET, pipelined when that is on. A Set if_absent is never sent twice: if
// Redis ran it and the connection dropped before the reply, a replay would find the key it wrote
// itself and answer "not stored"; the caller gets UNAVAILABLE instead. Replaying SET or SET XX
// writes the same value again and gives the same answer, so those keep go-redis's retries.
func (s *store) setOnce(ctx context.Context, key string, value []byte, ttl time.Duration, keepTTL bool, cond condition) error {
	args := setArgs(key, value, ttl, keepTTL, cond)
	newCmd := func() redis.Cmder {
		if cond == ifAbsent {
			return onceStatusCmd{redis.NewStatusCmd(ctx, args...)}
		}
		return redis.NewStatusCmd(ctx, args...)
	}
	if s.pipe != nil {
		cmd := newCmd()
		// A redirected command did not run, so sending it again below is not a replay.
		if err := s.pipe.do(ctx, key, cond == ifAbsent, nil, func() []redis.Cmder { return []redis.Cmder{cmd} }); !redirected(err) {
			return err
		}
	}
	cmd := newCmd()
	_ = s.client.Process(ctx, cmd)
	return cmd.Err()
}

// onceStatusCmd is a command go-redis must not send again after a network error (nor any other
// command of a pipeline that holds it).
type onceStatusCmd struct{ *redis.StatusCmd }

// NoRetry implements redis.Cmder.
func (onceStatusCmd) NoRetry() bool { return true }

// setArgs are the arguments of SET key value [PX ms | KEEPTTL] [NX | XX].
func setArgs(key string, value []byte, ttl time.Duration, keepTTL bool, cond condition) []any {
	args := make([]any, 3, 6)
	args[0], args[1], args[2] = "set", key, value
	switch {
	case keepTTL:
		args = append(args, "keepttl")
	case ttl > 0:
		args = append(args, "px", strconv.FormatInt(ttl.Milliseconds(), 10))
	}
	switch cond {
	case ifAbsent:
		args = append(args, "nx")
	case ifPresent:
		args = append(args, "xx")
	}
	return args
}

// delete removes keys and counts the call in the metrics; unlink does the work.
func (s *store) delete(ctx context.Context, keys []string) (int64, error) {
	start := time.Now()
	n, err := s.unlink(ctx, keys)
	s.metrics.observe(opDelete, start, err)
	if err != nil {
		return 0, backendError(ctx, "delete", err)
	}
	return n, nil
}

// unlink removes keys with UNLINK; in cluster mode one UNLINK per hash slot, pipelined.
func (s *store) unlink(ctx context.Context, keys []string) (int64, error) {
	if !s.cluster {
		// UNLINK frees large values off Redis's main thread; the count is the same as DEL's.
		return s.client.Unlink(ctx, keys...).Result()
	}
	groups := groupBySlot(keys)
	cmds := make([]*redis.IntCmd, len(groups))
	pipe := s.client.Pipeline()
	for i, g := range groups {
		cmds[i] = pipe.Unlink(ctx, g.keys(keys)...)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, err
	}
	var total int64
	for _, c := range cmds {
		total += c.Val()
	}
	return total, nil
}

// mgetEntry is one result of mget, in request order.
type mgetEntry struct {
	found bool
	value []byte
}

// mget reads keys in request order and counts the call in the metrics; fetch does the work.
func (s *store) mget(ctx context.Context, keys []string) ([]mgetEntry, error) {
	start := time.Now()
	out, err := s.fetch(ctx, keys)
	s.metrics.observe(opMGet, start, err)
	if err != nil {
		return nil, backendError(ctx, "mget", err)
	}
	return out, nil
}

// fetch reads keys with MGET; in cluster mode one MGET (or GET) per hash slot, pipelined, so no
// command spans slots. Values are views into each command's raw reply (mget.go).
func (s *store) fetch(ctx context.Context, keys []string) ([]mgetEntry, error) {
	out := make([]mgetEntry, len(keys))
	if !s.cluster {
		bufs, err := s.rawMGet(ctx, [][]string{keys}, []bool{false})
		if err == nil {
			err = parseValues(bufs[0].b, out, nil)
		}
		if err != nil {
			return nil, err
		}
		return out, nil
	}
	groups := groupBySlot(keys)
	keysOf := make([][]string, len(groups))
	get := make([]bool, len(groups))
	for i, g := range groups {
		keysOf[i], get[i] = g.keys(keys), len(g.idx) == 1
	}
	bufs, err := s.rawMGet(ctx, keysOf, get)
	if err != nil {
		return nil, err
	}
	for i, g := range groups {
		err := parseValues(bufs[i].b, out, g.idx)
		if redirected(err) {
			// A raw reply is not an error to go-redis, so it did not follow a redirect (a slot
			// moving); the cluster client does, for this group alone.
			err = s.fetchParsed(ctx, keys, g, out)
		}
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// fetchParsed reads one slot group with go-redis's parsed GET or MGET.
func (s *store) fetchParsed(ctx context.Context, keys []string, g slotGroup, out []mgetEntry) error {
	if len(g.idx) == 1 {
		v, err := s.client.Get(ctx, keys[g.idx[0]]).Result()
		if errors.Is(err, redis.Nil) {
			return nil
		}
		if err != nil {
			return err
		}
		out[g.idx[0]] = mgetEntry{found: true, value: readOnlyBytes(v)}
		return nil
	}
	vals, err := s.client.MGet(ctx, g.keys(keys)...).Result()
	if err != nil {
		return err
	}
	if len(vals) != len(g.idx) {
		return fmt.Errorf("MGET answered %d values for %d keys", len(vals), len(g.idx))
	}
	for j, v := range vals {
		if str, ok := v.(string); ok {
			out[g.idx[j]] = mgetEntry{found: true, value: readOnlyBytes(str)}
		}
	}
	return nil
}

// msetEntry is one key to write in mset.
type msetEntry struct {
	key   string
	value []byte
	ttl   time.Duration
}

// mset writes the entries. When none has an expiry to write, they go in one MSET (atomic, and
// like SET it clears old expiries; on a cluster one MSET per hash slot, pipelined). Otherwise
// every entry is its own SET (value and expiry atomic per key): on a single Redis, or when every
// key shares one cluster hash slot, all in one MULTI/EXEC transaction; else pipelined to their
// nodes. On a cluster, keys in several slots can be left partly written by a failure.
func (s *store) mset(ctx context.Context, entries []msetEntry) error {
	start := time.Now()
	var err error
	if withoutExpiry(entries) {
		err = s.msetPlain(ctx, entries)
	} else {
		pipe := s.client.TxPipeline()
		if s.cluster && !sameSlot(entries) {
			pipe = s.client.Pipeline()
		}
		for _, e := range entries {
			pipe.SetArgs(ctx, e.key, e.value, redis.SetArgs{TTL: e.ttl})
		}
		_, err = pipe.Exec(ctx)
	}
	s.metrics.observe(opMSet, start, err)
	if err != nil {
		return backendError(ctx, "mset", err)
	}
	return nil
}

func withoutExpiry(entries []msetEntry) bool {
	for _, e := range entries {
		if e.ttl > 0 {
			return false
		}
	}
	return true
}

// msetPlain writes entries without expiry with MSET: one command for up to max_keys_per_call
// keys instead of a SET each (Redis parses, and go-redis builds, one command).
func (s *store) msetPlain(ctx context.Context, entries []msetEntry) error {
	if !s.cluster || sameSlot(entries) {
		return s.client.Process(ctx, redis.NewStatusCmd(ctx, msetArgs(entries, nil)...))
	}
	keys := make([]string, len(entries))
	for i, e := range entries {
		keys[i] = e.key
	}
	pipe := s.client.Pipeline()
	for _, g := range groupBySlot(keys) {
		_ = pipe.Process(ctx, redis.NewStatusCmd(ctx, msetArgs(entries, g.idx)...))
	}
	_, err := pipe.Exec(ctx)
	return err
}

// msetArgs are the arguments of MSET for the entries at idx (all of them when idx is nil), in
// order, so a repeated key's last entry wins.
func msetArgs(entries []msetEntry, idx []int) []any {
	n := len(entries)
	if idx != nil {
		n = len(idx)
	}
	args := make([]any, 1, 1+2*n)
	args[0] = "mset"
	for i := range n {
		e := entries[i]
		if i < len(idx) { // idx, when given, has n entries
			e = entries[idx[i]]
		}
		args = append(args, e.key, e.value)
	}
	return args
}

// sameSlot reports whether every entry's key hashes to the same cluster slot.
func sameSlot(entries []msetEntry) bool {
	first := hashSlot(entries[0].key)
	for _, e := range entries[1:] {
		if hashSlot(e.key) != first {
			return false
		}
	}
	return true
}

// expire sets a new time to live, or removes the expiry when ttl is 0. It reports whether the
// key exists.
func (s *store) expire(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	start := time.Now()
	var found bool
	var err error
	if ttl > 0 {
		found, err = s.pexpire(ctx, key, ttl)
	} else {
		var n int64
		n, err = persistScript.Run(ctx, s.client, []string{key}).Int64()
		found = n == 1
	}
	s.metrics.observe(opExpire, start, err)
	if err != nil {
		return false, backendError(ctx, "expire", err)
	}
	return found, nil
}

// pexpire sends one PEXPIRE, pipelined when that is on.
func (s *store) pexpire(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	if s.pipe != nil {
		cmd := redis.NewBoolCmd(ctx, "pexpire", key, ttl.Milliseconds())
		err := s.pipe.do(ctx, key, false, nil, func() []redis.Cmder { return []redis.Cmder{cmd} })
		switch {
		case err == nil:
			return cmd.Val(), nil
		case !redirected(err):
			// Not cmd's value: after a passed deadline its batch may still be writing it.
			return false, err
		}
	}
	return s.client.PExpire(ctx, key, ttl).Result()
}

// readOnlyBytes views a value go-redis read as a string as bytes without copying it: values only
// flow into a response that protobuf reads, never writes, and a 100-key MGet would otherwise copy
// every value once more.
func readOnlyBytes(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s)) //nolint:gosec // read-only view, see above
}

func (s *store) ping(ctx context.Context) error {
	return s.client.Ping(ctx).Err()
}

// backendError classifies a Redis failure for the edge: a passed deadline or cancelled call is
// reported as such, ACL refusals and out-of-memory are reported as such, and everything else is
// a backend that a retry may cure.
func backendError(ctx context.Context, op string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: %w", op, err)
	}
	// go-redis turns the caller's deadline into a socket deadline, so it reports an i/o timeout,
	// possibly a moment before the context itself notices.
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("%s: %w (redis: %w)", op, ctxErr, err)
	}
	if deadline, ok := ctx.Deadline(); ok && !time.Now().Before(deadline) {
		return fmt.Errorf("%s: %w (redis: %w)", op, context.DeadlineExceeded, err)
	}
	msg := err.Error()
	switch {
	case strings.HasPrefix(msg, "NOPERM"):
		return apierr.New(apierr.ErrPermissionDenied,
			"%s: redis refused the key for the plugin's ACL user (check backend.key_prefix against the user's key pattern): %s", op, msg)
	case strings.HasPrefix(msg, "OOM"):
		return apierr.New(apierr.ErrResourceExhausted, "%s: redis is out of memory: %s", op, msg)
	}
	return apierr.Unavailable(op, err)
}

// expiry turns a requested time to live into the one written to Redis: whole milliseconds
// (rounded up, so a tiny positive TTL never becomes "no expiry") moved by up to ±jitter percent.
func expiry(ttl time.Duration, jitterPercent int) time.Duration {
	if ttl <= 0 {
		return 0
	}
	ms := int64((ttl + time.Millisecond - 1) / time.Millisecond)
	if jitterPercent > 0 {
		spread := float64(ms) * float64(jitterPercent) / 100
		ms += int64((rand.Float64()*2 - 1) * spread) //nolint:gosec // jitter needs spread, not secrecy
		ms = max(ms, 1)
	}
	return time.Duration(ms) * time.Millisecond
}
