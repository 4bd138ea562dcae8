package kafkastream

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
)

// These tests drive the ack ledger the way a Subscribe stream does, with records made in memory:
// no brokers, no gRPC.

var ledgerTP = topicPartition{"orders", 0}

// ledgerHarness holds one ledger with partition orders/0 assigned and remembers every ack id it
// handed out, by offset and attempt.
type ledgerHarness struct {
	t   *testing.T
	l   *ledger
	now time.Time
	ids map[int64][]string // ack ids per offset, one per attempt
	// deadLetters are deliveries a nack or an expiry left out of attempts, not yet written.
	deadLetters map[int64]*delivery
}

func newLedgerHarness(t *testing.T, maxMsgs int, maxBytes int64, maxAttempts int) *ledgerHarness {
	t.Helper()
	h := &ledgerHarness{
		t: t, l: newLedger([]string{ledgerTP.topic}, maxMsgs, maxBytes, 1<<20, maxAttempts, 7),
		now: time.Unix(1_700_000_000, 0), ids: map[int64][]string{}, deadLetters: map[int64]*delivery{},
	}
	h.l.assign(ledgerTP)
	return h
}

// fetch holds records at offsets [from, to) with a 1-byte key and value each.
func (h *ledgerHarness) fetch(from, to int64) {
	for off := from; off < to; off++ {
		h.l.hold(&kgo.Record{Topic: ledgerTP.topic, Partition: ledgerTP.partition, Offset: off, Key: []byte("k"), Value: []byte("v")})
	}
}

// deliver takes what the ledger sends now and returns the offsets.
func (h *ledgerHarness) deliver() []int64 {
	ds, _, _ := h.l.next(h.now)
	var offsets []int64
	for _, d := range ds {
		require.Equal(h.t, int(d.attempt), len(h.ids[d.rec.Offset])+1, "offset %d: attempts count up by one", d.rec.Offset)
		h.ids[d.rec.Offset] = append(h.ids[d.rec.Offset], d.ackID)
		offsets = append(offsets, d.rec.Offset)
	}
	return offsets
}

// settle acks or nacks the latest delivery of each offset and returns the ids the ledger ignored.
func (h *ledgerHarness) settle(ack bool, offsets ...int64) []string {
	ids := make([]string, 0, len(offsets))
	for _, off := range offsets {
		require.NotEmpty(h.t, h.ids[off], "offset %d was never delivered", off)
		ids = append(ids, h.ids[off][len(h.ids[off])-1])
	}
	return h.keep(h.l.settle(ids, ack))
}

func (h *ledgerHarness) keep(ignored []string, deadLetters []*delivery) []string {
	for _, d := range deadLetters {
		h.deadLetters[d.rec.Offset] = d
	}
	return ignored
}

// commitNext is where the partition's committed offset would move now.
func (h *ledgerHarness) commitNext() int64 { return h.l.parts[ledgerTP].commitNext }

// step is one thing a client or the stream does to the ledger.
type step func(h *ledgerHarness)

func deliverAll(h *ledgerHarness) { h.deliver() }
func ack(offsets ...int64) step {
	return func(h *ledgerHarness) { assert.Empty(h.t, h.settle(true, offsets...)) }
}
func nack(offsets ...int64) step {
	return func(h *ledgerHarness) { assert.Empty(h.t, h.settle(false, offsets...)) }
}
func expireAfter(d time.Duration) step {
	return func(h *ledgerHarness) { h.keep(nil, ledgerExpire(h, d)) }
}
func deadLetterWritten(off int64) step {
	return func(h *ledgerHarness) { deadLetterDone(h, off, true) }
}
func deadLetterFailed(off int64) step {
	return func(h *ledgerHarness) { deadLetterDone(h, off, false) }
}
func ackFirstAttempt(off int64) step { return func(h *ledgerHarness) { ackStale(h, h.ids[off][0]) } }
func ackWithForgedEpoch(off int64) step {
	return func(h *ledgerHarness) { ackStale(h, forgeEpoch(h.t, h.ids[off][0])) }
}

func ledgerExpire(h *ledgerHarness, d time.Duration) []*delivery {
	_, deadLetters := h.l.expire(h.now.Add(d), d)
	return deadLetters
}

func deadLetterDone(h *ledgerHarness, off int64, written bool) {
	d := h.deadLetters[off]
	require.NotNil(h.t, d, "offset %d was not handed out for dead-lettering", off)
	delete(h.deadLetters, off)
	assert.True(h.t, h.l.deadLettered(d, written))
}

func ackStale(h *ledgerHarness, id string) {
	assert.Equal(h.t, []string{id}, h.keep(h.l.settle([]string{id}, true)), "a stale id is ignored")
}

func forgeEpoch(t *testing.T, raw string) string {
	t.Helper()
	id, ok := parseAckID(raw)
	require.True(t, ok)
	id.epoch++
	return id.String()
}

func TestLedgerCommitsOnlyOverAContiguousSettledPrefix(t *testing.T) {
	tests := []struct {
		name        string
		maxAttempts int
		steps       []step
		wantCommit  int64
		// wantAgain are the offsets the ledger delivers again after the steps; wantDeadLetters
		// those waiting for their dead-letter write.
		wantAgain       []int64
		wantDeadLetters []int64
	}{
		{
			name:       "nothing acked keeps the commit point at the first delivered offset",
			steps:      []step{deliverAll},
			wantCommit: 0,
		},
		{
			name:       "acks in order move the commit point past the last one",
			steps:      []step{deliverAll, ack(0, 1, 2, 3, 4)},
			wantCommit: 5,
		},
		{
			name:       "acks after an unacked message wait for it",
			steps:      []step{deliverAll, ack(0, 2, 3, 4)},
			wantCommit: 1,
		},
		{
			name:       "acking the message in the gap moves the commit point over the acks after it",
			steps:      []step{deliverAll, ack(4, 3, 2, 0), ack(1)},
			wantCommit: 5,
		},
		{
			name:       "a nacked message holds the commit point and is delivered again",
			steps:      []step{deliverAll, ack(0, 1), nack(2), ack(3, 4)},
			wantCommit: 2,
			wantAgain:  []int64{2},
		},
		{
			name:       "acking the redelivery closes the gap",
			steps:      []step{deliverAll, ack(0, 1), nack(2), ack(3, 4), deliverAll, ack(2)},
			wantCommit: 5,
		},
		{
			name:       "the first attempt's ack id no longer counts once the message was nacked",
			steps:      []step{deliverAll, ack(0, 1), nack(2), deliverAll, ackFirstAttempt(2), ack(3, 4)},
			wantCommit: 2,
		},
		{
			name:       "an ack id from another partition epoch is ignored",
			steps:      []step{deliverAll, ackWithForgedEpoch(0)},
			wantCommit: 0,
		},
		{
			name:       "deliveries past the ack deadline count as nacked",
			steps:      []step{deliverAll, ack(0), expireAfter(time.Minute)},
			wantCommit: 1,
			wantAgain:  []int64{1, 2, 3, 4},
		},
		{
			name:            "a message out of attempts holds the commit point until its dead-letter write succeeds",
			maxAttempts:     2,
			steps:           []step{deliverAll, nack(1), deliverAll, nack(1), ack(0, 2, 3, 4)},
			wantCommit:      1,
			wantDeadLetters: []int64{1},
		},
		{
			name:        "a written dead letter counts as acked",
			maxAttempts: 2,
			steps:       []step{deliverAll, nack(1), deliverAll, nack(1), ack(0, 2, 3, 4), deadLetterWritten(1)},
			wantCommit:  5,
		},
		{
			name:        "a failed dead-letter write delivers the message again",
			maxAttempts: 2,
			steps:       []step{deliverAll, nack(1), deliverAll, nack(1), ack(0, 2, 3, 4), deadLetterFailed(1)},
			wantCommit:  1,
			wantAgain:   []int64{1},
		},
		{
			name:        "an expiry on the last attempt dead-letters too",
			maxAttempts: 1,
			steps:       []step{deliverAll, ack(0, 1, 2, 3), expireAfter(time.Minute), deadLetterWritten(4)},
			wantCommit:  5,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newLedgerHarness(t, 100, 1<<20, tt.maxAttempts)
			h.fetch(0, 5)
			for _, s := range tt.steps {
				s(h)
			}
			assert.Equal(t, tt.wantCommit, h.commitNext(), "commit point")
			again := h.deliver()
			slices.Sort(again) // an expiry takes deliveries back in no particular order
			assert.Equal(t, tt.wantAgain, again, "delivered again")
			var waiting []int64
			for off := range h.deadLetters {
				waiting = append(waiting, off)
			}
			slices.Sort(waiting)
			assert.Equal(t, tt.wantDeadLetters, waiting, "waiting for their dead-letter write")
		})
	}
}

func TestLedgerFlowControl(t *testing.T) {
	tests := []struct {
		name      string
		maxMsgs   int
		maxBytes  int64
		respMax   int
		values    []int // value sizes of the fetched records, at offsets 0, 1, ...
		wantSent  int
		wantRoom  int
		afterAcks int // acks of the oldest deliveries, then one more next()
		wantThen  int
	}{
		{name: "nothing held leaves the whole window for polling", maxMsgs: 5, maxBytes: 100, respMax: 100, wantRoom: 5},
		{name: "sending stops at the outstanding message limit", maxMsgs: 2, maxBytes: 100, respMax: 100, values: []int{1, 1, 1, 1, 1}, wantSent: 2, afterAcks: 1, wantThen: 1},
		{name: "sending stops at the outstanding byte limit", maxMsgs: 10, maxBytes: 10, respMax: 100, values: []int{4, 4, 4, 4}, wantSent: 2, afterAcks: 2, wantThen: 2},
		{name: "a message larger than the byte limit still goes to an empty stream", maxMsgs: 10, maxBytes: 1, respMax: 100, values: []int{99, 1}, wantSent: 1, afterAcks: 1, wantThen: 1},
		{name: "a response is cut at the response byte limit", maxMsgs: 10, maxBytes: 100, respMax: 5, values: []int{4, 4, 4, 4}, wantSent: 2, afterAcks: 0, wantThen: 2},
		{name: "a window with room left is offered to polling", maxMsgs: 10, maxBytes: 100, respMax: 100, values: []int{1, 1, 1}, wantSent: 3, wantRoom: 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLedger([]string{ledgerTP.topic}, tt.maxMsgs, tt.maxBytes, tt.respMax, 0, 0)
			l.assign(ledgerTP)
			for i, n := range tt.values {
				l.hold(&kgo.Record{Topic: ledgerTP.topic, Offset: int64(i), Value: make([]byte, n)})
			}
			sent, _, room := l.next(time.Time{})
			assert.Len(t, sent, tt.wantSent, "sent")
			assert.Equal(t, tt.wantRoom, room, "room for polling")
			var ids []string
			for _, d := range sent[:tt.afterAcks] {
				ids = append(ids, d.ackID)
			}
			if len(ids) > 0 {
				ignored, _ := l.settle(ids, true)
				require.Empty(t, ignored)
			}
			then, _, _ := l.next(time.Time{})
			assert.Len(t, then, tt.wantThen, "sent after the acks")
			assert.LessOrEqual(t, l.outstanding, tt.maxMsgs, "outstanding messages")
		})
	}
}

func TestLedgerDeliveryAttempts(t *testing.T) {
	tests := []struct {
		name string
		meta *commitMeta // left by an earlier member of the group
		want []int32     // attempts of offsets 0..3 on the first delivery
	}{
		{name: "a fresh partition delivers every message for the first time", want: []int32{1, 1, 1, 1}},
		{name: "messages an earlier member delivered count it", meta: &commitMeta{deliveredEnd: 2, attempts: map[int64]int32{}}, want: []int32{2, 2, 1, 1}},
		{name: "recorded counts above one continue", meta: &commitMeta{deliveredEnd: 3, attempts: map[int64]int32{1: 4}}, want: []int32{2, 5, 2, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newLedger([]string{ledgerTP.topic}, 100, 1<<20, 1<<20, 0, 0)
			if tt.meta != nil {
				l.applyMeta(ledgerTP, *tt.meta) // offsets fetched before the assignment callback
			}
			l.assign(ledgerTP)
			for off := range int64(4) {
				l.hold(&kgo.Record{Topic: ledgerTP.topic, Offset: off})
			}
			l.hold(&kgo.Record{Topic: ledgerTP.topic, Offset: 0}) // fetched twice
			ds, _, _ := l.next(time.Time{})
			var got []int32
			for _, d := range ds {
				got = append(got, d.attempt)
			}
			assert.Equal(t, tt.want, got)
			assert.Equal(t, int64(4), l.parts[ledgerTP].deliveredEnd)
		})
	}
}

func TestLedgerRevocationCommitsTheAckedPrefixAndForgetsThePartition(t *testing.T) {
	h := newLedgerHarness(t, 100, 1<<20, 0)
	other := topicPartition{"orders", 1}
	h.l.assign(other)
	h.fetch(0, 4)
	h.l.hold(&kgo.Record{Topic: other.topic, Partition: other.partition, Offset: 9})
	require.Len(t, h.deliver(), 5)
	h.settle(true, 0, 1)
	nack(2)(h)
	h.fetch(4, 6) // held, not yet sent

	gone, commits := h.l.drop(map[string][]int32{"orders": {0}}, true)
	assert.Equal(t, []topicPartition{ledgerTP}, gone)
	require.Len(t, commits, 1)
	assert.Equal(t, ledgerTP, commits[0].tp)
	assert.Equal(t, int64(2), commits[0].offset, "the commit stops at the nacked message")
	assert.Equal(t, 1, h.l.outstanding, "only the other partition's message is still outstanding")
	assert.Empty(t, h.l.held, "held records of the revoked partition are dropped")
	assert.Empty(t, h.l.redeliver, "queued redeliveries of the revoked partition are dropped")
	assert.Equal(t, []string{h.ids[3][0]}, h.settle(true, 3), "ids of a revoked partition are ignored")

	h.l.assign(ledgerTP)
	assert.Equal(t, []string{h.ids[3][0]}, h.settle(true, 3), "ids from before the partition came back are ignored")
	gone, commits = h.l.drop(map[string][]int32{"orders": {0}}, false)
	assert.Equal(t, []topicPartition{ledgerTP}, gone)
	assert.Empty(t, commits, "a lost partition commits nothing")
}

// TestLedgerRandomSettlementsNeverCommitPastAnUnsettledMessage plays random acks, nacks, expiries
// and dead-letter results and checks the at-least-once rule after every step: every offset below
// the commit point was acked or dead-lettered, and every delivered offset at or above it is still
// outstanding or queued to be sent again.
func TestLedgerRandomSettlementsNeverCommitPastAnUnsettledMessage(t *testing.T) {
	const records = 200
	rng := rand.New(rand.NewPCG(1, 2))
	h := newLedgerHarness(t, 16, 1<<20, 3)
	h.fetch(0, records)
	settled := map[int64]bool{}
	steps, commitMoves := 0, 0
	for h.commitNext() < records && steps < 100_000 {
		steps++
		before := h.commitNext()
		h.deliver()
		outstanding := outstandingOffsets(h.l)
		switch r := rng.IntN(10); {
		case r < 6 && len(outstanding) > 0:
			off := outstanding[rng.IntN(len(outstanding))]
			require.Empty(t, h.settle(true, off))
			settled[off] = true
		case r < 8 && len(outstanding) > 0:
			require.Empty(t, h.settle(false, outstanding[rng.IntN(len(outstanding))]))
		case r < 9:
			h.keep(nil, ledgerExpire(h, time.Hour))
		default:
			for off := range h.deadLetters {
				written := rng.IntN(2) == 0
				deadLetterDone(h, off, written)
				settled[off] = settled[off] || written
			}
		}
		if h.commitNext() != before {
			commitMoves++
		}
		for off := range h.commitNext() {
			require.True(t, settled[off], "offset %d is below the commit point %d but was never settled", off, h.commitNext())
		}
		for off := range h.ids {
			if off >= h.commitNext() && !settled[off] {
				_, inflight := h.l.parts[ledgerTP].inflight[off]
				require.True(t, inflight, "offset %d was delivered, is unsettled and is no longer tracked", off)
			}
		}
	}
	t.Logf("%d records settled in %d random steps; the commit point moved %d times", records, steps, commitMoves)
	assert.Equal(t, int64(records), h.commitNext())
}

func outstandingOffsets(l *ledger) []int64 {
	var out []int64
	for off, d := range l.parts[ledgerTP].inflight {
		if !d.acked && !d.parked {
			out = append(out, off)
		}
	}
	slices.Sort(out)
	return out
}
