package kafkastream

import (
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

type topicPartition struct {
	topic     string
	partition int32
}

// delivery is one message sent on the stream and not yet settled.
type delivery struct {
	rec     *kgo.Record
	attempt int32
	size    int64
	sent    time.Time // when this attempt was sent, for backend.ack_deadline
	ackID   string    // this attempt's ack id
	acked   bool
	// parked is true while the message waits for redelivery or dead-lettering: it holds no
	// flow-control slot and its old ack id is invalid.
	parked bool
}

// partState is what a stream knows about one assigned partition.
type partState struct {
	topicIdx int
	epoch    uint32
	inflight map[int64]*delivery
	order    []int64 // delivered offsets, oldest first, until acked in a contiguous prefix
	// commitNext is the offset to commit (one past the acked prefix); -1 until known.
	commitNext int64
	committed  int64
	hwm        int64
	// deliveredEnd is one past the highest offset the group has delivered, as far as known;
	// prior holds delivery counts above one that earlier members recorded. Both travel in the
	// commit metadata so the next member continues the counts.
	deliveredEnd int64
	prior        map[int64]int32
	metaVer      int
	metaSaved    int
}

// ledger is the delivery state of one Subscribe stream, kept apart from the Kafka client and
// from gRPC: records waiting for flow-control room, outstanding deliveries, and how far each
// partition's contiguous settled prefix reaches. It holds the at-least-once rule: a partition's
// commit point only moves over offsets that were acked (or dead-lettered), so whatever is nacked,
// expired or left unsettled is delivered again, on this stream or by the partition's next owner.
// It does no locking; the subscription's mutex guards it.
type ledger struct {
	topics   []string // ack ids name topics by their index here
	topicIdx map[string]int
	maxMsgs  int
	maxBytes int64
	respMax  int
	// maxAttempts is backend.max_delivery_attempts: a nack of this attempt dead-letters; 0 never.
	maxAttempts int

	parts       map[topicPartition]*partState
	epoch       uint32
	outstanding int
	outBytes    int64
	held        []*kgo.Record // fetched, waiting for flow-control room
	redeliver   []*delivery   // nacked, waiting to be sent again
	// fetchedMeta keeps commit metadata read before the partition's state exists.
	fetchedMeta map[topicPartition]commitMeta
}

// newLedger starts a ledger whose partition epochs count up from epoch.
func newLedger(topics []string, maxMsgs int, maxBytes int64, respMax, maxAttempts int, epoch uint32) *ledger {
	l := &ledger{
		topics: topics, topicIdx: make(map[string]int, len(topics)),
		maxMsgs: maxMsgs, maxBytes: maxBytes, respMax: respMax, maxAttempts: maxAttempts,
		parts: map[topicPartition]*partState{}, epoch: epoch, fetchedMeta: map[topicPartition]commitMeta{},
	}
	for i, t := range topics {
		l.topicIdx[t] = i
	}
	return l
}

// assign starts tracking a partition under a fresh epoch, so no older ack id matches it.
func (l *ledger) assign(tp topicPartition) {
	l.epoch++
	st := &partState{
		topicIdx: l.topicIdx[tp.topic], epoch: l.epoch,
		inflight: map[int64]*delivery{}, commitNext: -1, committed: -1, hwm: -1, deliveredEnd: -1,
	}
	if meta, ok := l.fetchedMeta[tp]; ok {
		st.deliveredEnd, st.prior = meta.deliveredEnd, meta.attempts
		delete(l.fetchedMeta, tp)
	}
	l.parts[tp] = st
}

// applyMeta takes the delivery counts an earlier member left in a partition's commit metadata.
func (l *ledger) applyMeta(tp topicPartition, meta commitMeta) {
	if st := l.parts[tp]; st != nil {
		st.deliveredEnd, st.prior = meta.deliveredEnd, meta.attempts
		return
	}
	l.fetchedMeta[tp] = meta
}

// drop forgets partitions, with their held records and queued redeliveries. It returns the
// partitions it knew and, when wantCommit, the commits they still need.
func (l *ledger) drop(parts map[string][]int32, wantCommit bool) ([]topicPartition, []commitPoint) {
	var dropped []topicPartition
	var commits []commitPoint
	gone := map[topicPartition]bool{}
	for topic, ps := range parts {
		for _, part := range ps {
			tp := topicPartition{topic, part}
			st := l.parts[tp]
			if st == nil {
				continue
			}
			gone[tp] = true
			dropped = append(dropped, tp)
			for _, d := range st.inflight {
				if !d.acked && !d.parked {
					l.outstanding--
					l.outBytes -= d.size
				}
			}
			if wantCommit && st.needsCommit() {
				commits = append(commits, st.commitPoint(tp))
			}
			delete(l.parts, tp)
		}
	}
	l.held = slices.DeleteFunc(l.held, func(r *kgo.Record) bool { return gone[topicPartition{r.Topic, r.Partition}] })
	l.redeliver = slices.DeleteFunc(l.redeliver, func(d *delivery) bool { return gone[topicPartition{d.rec.Topic, d.rec.Partition}] })
	return dropped, commits
}

// hold queues a fetched record until there is room to send it.
func (l *ledger) hold(r *kgo.Record) { l.held = append(l.held, r) }

// setHighWatermark records a partition's high watermark; it returns nil for a partition not held.
func (l *ledger) setHighWatermark(tp topicPartition, hwm int64) *partState {
	st := l.parts[tp]
	if st != nil {
		st.hwm = hwm
	}
	return st
}

// next takes what may be sent now: redeliveries first, then held records, within the limits
// (the first message always fits an empty stream, however large). It also returns how many of
// them are redeliveries and, when nothing waits, the room left for polling.
func (l *ledger) next(now time.Time) (out []*delivery, redelivered, room int) {
	respBytes := 0
	fits := func(size int64) bool {
		if l.outstanding >= l.maxMsgs || respBytes >= l.respMax {
			return false
		}
		return l.outstanding == 0 || l.outBytes+size <= l.maxBytes
	}
	for len(l.redeliver) > 0 {
		d := l.redeliver[0]
		if !fits(d.size) {
			break
		}
		l.redeliver = l.redeliver[1:]
		st := l.parts[topicPartition{d.rec.Topic, d.rec.Partition}]
		if st == nil || st.inflight[d.rec.Offset] != d {
			continue
		}
		d.parked = false
		d.attempt++
		d.sent = now
		st.metaVer++
		l.dispatch(st, d)
		respBytes += int(d.size)
		out = append(out, d)
		redelivered++
	}
	// Deliveries of fresh records come from one slab per response rather than one allocation
	// per record; a slab lives until its last delivery is settled, which the limits bound.
	var slab []delivery
	var last lastPart
	for len(l.held) > 0 {
		r := l.held[0]
		size := int64(len(r.Key) + len(r.Value))
		if !fits(size) {
			break
		}
		l.held = l.held[1:]
		st := l.part(&last, topicPartition{r.Topic, r.Partition})
		if st == nil {
			continue // revoked while held
		}
		if _, dup := st.inflight[r.Offset]; dup {
			continue
		}
		if len(slab) == 0 {
			slab = make([]delivery, min(len(l.held)+1, max(l.maxMsgs-l.outstanding, 1), 1024))
		}
		d := &slab[0]
		slab = slab[1:]
		*d = delivery{rec: r, attempt: 1 + st.priorAttempts(r.Offset), size: size, sent: now}
		if st.commitNext < 0 {
			// Committing the first delivered offset keeps unacked messages for the next member
			// even when the group would otherwise start at the end of the log.
			st.commitNext = r.Offset
		}
		if r.Offset >= st.deliveredEnd {
			st.deliveredEnd = r.Offset + 1
			st.metaVer++
		}
		st.inflight[r.Offset] = d
		st.order = append(st.order, r.Offset)
		l.dispatch(st, d)
		respBytes += int(size)
		out = append(out, d)
	}
	if len(l.held) == 0 {
		l.held = nil
	}
	if len(l.held) == 0 && len(l.redeliver) == 0 && l.outstanding < l.maxMsgs && (l.outstanding == 0 || l.outBytes < l.maxBytes) {
		room = l.maxMsgs - l.outstanding
	}
	return out, redelivered, room
}

// dispatch counts d as outstanding and mints the ack id of its current attempt.
func (l *ledger) dispatch(st *partState, d *delivery) {
	l.outstanding++
	l.outBytes += d.size
	d.ackID = ackID{topic: st.topicIdx, partition: d.rec.Partition, epoch: st.epoch, offset: d.rec.Offset, attempt: d.attempt}.String()
}

// lastPart remembers the partition state looked up last: fetched records and ack ids come in runs
// of one partition, so most lookups skip hashing the topic name.
type lastPart struct {
	tp topicPartition
	st *partState
	ok bool
}

func (l *ledger) part(c *lastPart, tp topicPartition) *partState {
	if c.ok && c.tp == tp {
		return c.st
	}
	*c = lastPart{tp: tp, st: l.parts[tp], ok: true}
	return c.st
}

// settle acks or nacks ids. It returns the ids that matched no outstanding delivery, and the
// deliveries a nack left out of attempts, which the caller dead-letters.
func (l *ledger) settle(ids []string, ack bool) (ignored []string, deadLetters []*delivery) {
	var last lastPart
	for _, raw := range ids {
		id, ok := parseAckID(raw)
		if !ok || id.topic >= len(l.topics) {
			ignored = append(ignored, raw)
			continue
		}
		st := l.part(&last, topicPartition{l.topics[id.topic], id.partition})
		if st == nil || st.epoch != id.epoch {
			ignored = append(ignored, raw)
			continue
		}
		d := st.inflight[id.offset]
		if d == nil || d.acked || d.parked || d.attempt != id.attempt {
			ignored = append(ignored, raw)
			continue
		}
		if ack {
			l.outstanding--
			l.outBytes -= d.size
			d.acked = true
			l.advance(st)
		} else if l.nack(d) {
			deadLetters = append(deadLetters, d)
		}
	}
	return ignored, deadLetters
}

// expire nacks deliveries sent at least deadline before now, as if the client had nacked them.
func (l *ledger) expire(now time.Time, deadline time.Duration) (expired int, deadLetters []*delivery) {
	for _, st := range l.parts {
		for _, d := range st.inflight {
			if d.acked || d.parked || now.Sub(d.sent) < deadline {
				continue
			}
			expired++
			if l.nack(d) {
				deadLetters = append(deadLetters, d)
			}
		}
	}
	return expired, deadLetters
}

// nack takes an outstanding delivery back: it is queued for redelivery, or reports true when it
// used up its attempts and must be dead-lettered.
func (l *ledger) nack(d *delivery) bool {
	l.outstanding--
	l.outBytes -= d.size
	d.parked = true
	if l.maxAttempts > 0 && int(d.attempt) >= l.maxAttempts {
		return true
	}
	l.redeliver = append(l.redeliver, d)
	return false
}

// deadLettered settles a dead-letter write: written, the message counts as acked; failed, it is
// queued for redelivery. owned is false when the partition moved on meanwhile (its next owner
// delivers the message again).
func (l *ledger) deadLettered(d *delivery, written bool) (owned bool) {
	st := l.parts[topicPartition{d.rec.Topic, d.rec.Partition}]
	if st == nil || st.inflight[d.rec.Offset] != d {
		return false
	}
	if !written {
		l.redeliver = append(l.redeliver, d)
		return true
	}
	d.acked = true
	l.advance(st)
	return true
}

// advance moves the commit point over the acked prefix of delivered offsets.
func (l *ledger) advance(st *partState) {
	i := 0
	for ; i < len(st.order); i++ {
		d := st.inflight[st.order[i]]
		if d != nil && !d.acked {
			break
		}
		st.commitNext = st.order[i] + 1
		delete(st.inflight, st.order[i])
	}
	st.order = st.order[i:]
	if len(st.order) == 0 {
		st.order = nil
	}
}
