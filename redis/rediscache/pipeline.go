package rediscache

import (
	"cmp"
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// maxBatchCalls bounds the calls one pipelined write carries, so one batch's replies never
	// hold many megabytes and a slow batch delays few calls.
	maxBatchCalls = 128
	// maxBatchesInFlight is how many batches one node's queue keeps on the wire at once. While
	// they are out, new calls wait in the queue and leave together in the next batch: under load
	// batches form by themselves, and a lone call is sent at once, without a timer's delay.
	maxBatchesInFlight = 2
)

// pipeliner sends the single-key commands of concurrent calls to Redis together, in one
// pipelined write and read per batch, which saves system calls on both sides under load
// (backend.auto_pipeline). Unlike go-redis's autopipeliner it keeps every call's own deadline:
// the caller waits for its batch or for its context, whichever comes first, and a batch is
// bounded by the latest deadline among its callers (and by go-redis's read and write timeouts).
// A call whose caller has gone before its batch is written is not sent at all.
//
// On Redis Cluster there is one queue per master node, written through that node's client, so
// a slow node delays only its own callers and a MULTI/EXEC block stays on one connection. A
// command the node redirects (MOVED, ASK) or refuses while the cluster changes did not run;
// the store sends it again through the cluster client, which follows the redirect.
//
// Commands that must never be sent twice (a Set if_absent) ride in batches of their own that
// go-redis never retries; other batches keep the client's retry policy (max_retries), which
// sends every command of a batch again after a connection error: fine for reads, SET and
// SET XX, PEXPIRE.
type pipeliner struct {
	cluster *redis.ClusterClient // nil on a single Redis
	// retried and once are the queues of a single Redis.
	retried, once *pipeQueue
	stats         *pipeStats

	mu sync.Mutex
	// nodes holds a cluster's queues by master node. Entries stay for the client's life: a
	// cluster has few nodes, and the map is dropped with the store when the client is replaced.
	nodes map[pipeKey]*pipeQueue
}

// pipeStats counts what the pipeliner sent, so tests and benchmarks can show batching happened.
type pipeStats struct {
	// batches and calls count the batches written and the calls in them; direct counts the
	// calls sent on their own because nothing else was waiting.
	batches, calls, direct atomic.Int64
}

type pipeKey struct {
	node *redis.Client
	once bool
}

// newPipeliner batches commands for client.
func newPipeliner(client redis.UniversalClient) *pipeliner {
	stats := &pipeStats{}
	if c, ok := client.(*redis.ClusterClient); ok {
		return &pipeliner{cluster: c, nodes: map[pipeKey]*pipeQueue{}, stats: stats}
	}
	return &pipeliner{
		retried: &pipeQueue{client: client, stats: stats},
		once:    &pipeQueue{client: client, stats: stats},
		stats:   stats,
	}
}

// do sends the commands of one call, in order, on one connection, in the next batch of the queue
// for key's node; once marks commands that must never be sent twice (and must be NoRetry). It
// returns the first command error, or the context's error the moment the context ends. direct,
// when not nil, is the call sent on its own without the pipeliner, used when the call would be a
// batch of one anyway; batched builds the commands otherwise.
func (p *pipeliner) do(ctx context.Context, key string, once bool, direct func() error, batched func() []redis.Cmder) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	q, err := p.queue(ctx, key, once)
	if err != nil {
		return err
	}
	// A batch outlives its callers: it takes the latest of their deadlines, not one caller's
	// context, so the queue calls below pass none.
	if direct != nil && q.claimIdle() {
		p.stats.direct.Add(1)
		err := direct()
		q.next() //nolint:contextcheck // the next batch belongs to other callers
		return err
	}
	cmds := batched()
	c := &pipeCall{ctx: ctx, cmds: cmds, done: make(chan struct{})}
	if q.add(c) { //nolint:contextcheck // see above
		// Alone: sent on this goroutine, bounded by this context, as without pipelining, which
		// saves the two goroutine hand-offs a lone call would otherwise pay.
		q.write(ctx, []*pipeCall{c})
		q.next() //nolint:contextcheck // the next batch belongs to other callers
		return firstErr(cmds)
	}
	select {
	case <-c.done:
		return firstErr(cmds)
	case <-ctx.Done():
		// The batch may still be on the wire; it no longer waits for this caller, who must not
		// read the commands (the batch goroutine may still write them).
		c.left.Store(true)
		return ctx.Err()
	}
}

func firstErr(cmds []redis.Cmder) error {
	var err error
	for _, cmd := range cmds {
		err = cmp.Or(err, cmd.Err())
	}
	return err
}

func (p *pipeliner) queue(ctx context.Context, key string, once bool) (*pipeQueue, error) {
	if p.cluster == nil {
		if once {
			return p.once, nil
		}
		return p.retried, nil
	}
	node, err := p.cluster.MasterForKey(ctx, key)
	if err != nil {
		return nil, err
	}
	k := pipeKey{node: node, once: once}
	p.mu.Lock()
	defer p.mu.Unlock()
	q := p.nodes[k]
	if q == nil {
		q = &pipeQueue{client: node, stats: p.stats}
		p.nodes[k] = q
	}
	return q, nil
}

// pipeQueue is the calls waiting for one connection target.
type pipeQueue struct {
	client interface{ Pipeline() redis.Pipeliner }
	stats  *pipeStats

	mu      sync.Mutex
	pending []*pipeCall
	sending int // batches on the wire, at most maxBatchesInFlight
}

// pipeCall is one caller's commands and its wait.
type pipeCall struct {
	ctx  context.Context
	cmds []redis.Cmder
	done chan struct{} // closed when the commands have their replies or errors
	left atomic.Bool   // the caller stopped waiting
}

// claimIdle takes a batch slot for a call to be sent on its own, if nothing is waiting and a
// slot is free; q.next must follow.
func (q *pipeQueue) claimIdle() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.pending) > 0 || q.sending >= maxBatchesInFlight {
		return false
	}
	q.sending++
	return true
}

// add queues c and starts a batch if fewer than maxBatchesInFlight are out. It reports whether
// that batch is c alone, which the caller then sends itself; other batches get a goroutine.
func (q *pipeQueue) add(c *pipeCall) (alone bool) {
	q.mu.Lock()
	q.pending = append(q.pending, c)
	if q.sending >= maxBatchesInFlight {
		q.mu.Unlock()
		return false
	}
	q.sending++
	batch := q.takeLocked()
	q.mu.Unlock()
	if len(batch) == 1 && batch[0] == c {
		return true
	}
	go q.send(batch)
	return false
}

func (q *pipeQueue) takeLocked() []*pipeCall {
	n := min(len(q.pending), maxBatchCalls)
	batch := q.pending[:n:n]
	q.pending = q.pending[n:]
	return batch
}

// send writes batch and, while calls are waiting, the next batches; it ends when the queue is
// empty.
func (q *pipeQueue) send(batch []*pipeCall) {
	for {
		q.exec(batch)
		var more bool
		if batch, more = q.nextBatch(); !more {
			return
		}
	}
}

// next ends a batch a caller sent itself: the calls that queued meanwhile get a goroutine.
func (q *pipeQueue) next() {
	if batch, more := q.nextBatch(); more {
		go q.send(batch)
	}
}

// nextBatch takes the next batch to send or, with none pending, ends the sender's turn.
func (q *pipeQueue) nextBatch() ([]*pipeCall, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.pending) == 0 {
		q.pending = nil
		q.sending--
		return nil, false
	}
	return q.takeLocked(), true
}

// exec sends one batch and wakes its callers. The batch outlives any one caller: it is not
// cancelled with them, only bounded by the latest of their deadlines (go-redis turns it into
// socket deadlines, capped by its read and write timeouts).
func (q *pipeQueue) exec(batch []*pipeCall) {
	var deadline time.Time
	bounded := true
	for _, c := range batch {
		if c.left.Load() {
			continue
		}
		if d, ok := c.ctx.Deadline(); !ok {
			bounded = false
		} else if d.After(deadline) {
			deadline = d
		}
	}
	ctx := context.Background()
	if bounded && !deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	q.write(ctx, batch)
}

// write sends the commands of batch's remaining callers as one go-redis pipeline and wakes every
// caller.
func (q *pipeQueue) write(ctx context.Context, batch []*pipeCall) {
	defer func() {
		for _, c := range batch {
			close(c.done)
		}
	}()
	pipe := q.client.Pipeline()
	live := 0
	for _, c := range batch {
		// A caller gone before its batch is written is not sent at all.
		if c.left.Load() {
			continue
		}
		for _, cmd := range c.cmds {
			_ = pipe.Process(ctx, cmd)
		}
		live++
	}
	if live == 0 {
		return
	}
	q.stats.batches.Add(1)
	q.stats.calls.Add(int64(live))
	// Every command carries its own reply or error; Exec's error is the first of them.
	_, _ = pipe.Exec(ctx)
}

// redirected reports whether a cluster node answered that it did not run a command because the
// slot lives, or is moving, elsewhere.
func redirected(err error) bool {
	if err == nil {
		return false
	}
	msg := err.Error()
	for _, prefix := range []string{"MOVED ", "ASK ", "TRYAGAIN ", "CLUSTERDOWN "} {
		if strings.HasPrefix(msg, prefix) {
			return true
		}
	}
	return false
}
