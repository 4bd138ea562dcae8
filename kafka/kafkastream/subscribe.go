package kafkastream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/prism-gateway/plugins/core/apierr"
	streamv1 "github.com/prism-gateway/plugins/gen/prism/stream/v1"
)

// Dead-letter headers added to a record moved to the dead-letter topic.
const (
	HeaderDLQTopic     = "prism-dlq-original-topic"
	HeaderDLQPartition = "prism-dlq-original-partition"
	HeaderDLQOffset    = "prism-dlq-original-offset"
	HeaderDLQGroup     = "prism-dlq-group"
	HeaderDLQAttempts  = "prism-dlq-delivery-attempts"
)

// finalCommitTimeout bounds the commit a stream makes when it ends or loses partitions.
const finalCommitTimeout = 10 * time.Second

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

// subscription is one Subscribe stream: a consumer-group member whose deliveries are settled by
// the client's acks and nacks.
type subscription struct {
	p        *Plugin
	log      *slog.Logger
	group    string
	topics   []string
	topicIdx map[string]int
	maxMsgs  int
	maxBytes int64
	respMax  int
	stream   string
	client   *kgo.Client
	// topicByID names topics in commit and offset-fetch messages that carry only topic IDs.
	topicByID map[[16]byte]string

	sendMu sync.Mutex
	send   func(*streamv1.SubscribeResponse) error
	closed bool

	mu          sync.Mutex
	parts       map[topicPartition]*partState
	epoch       uint32
	outstanding int
	outBytes    int64
	held        []*kgo.Record // fetched, waiting for flow-control room
	redeliver   []*delivery   // nacked, waiting to be sent again
	wake        chan struct{}
	pollCancel  context.CancelFunc
	done        bool
	// fetchedMeta keeps commit metadata read before the partition's state exists.
	fetchedMeta map[topicPartition]commitMeta
}

// subscribe runs one Subscribe stream until the client ends it, the plugin drains, or an error.
func (p *Plugin) subscribe(ctx context.Context, recv func() (*streamv1.SubscribeRequest, error), send func(*streamv1.SubscribeResponse) error) error {
	_, _, topics, err := p.clients()
	if err != nil {
		return err
	}
	first, err := recv()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return apierr.Invalid("subscription", "the stream ended before the first request")
		}
		return err
	}
	s, start, err := p.newSubscription(ctx, topics, first)
	if err != nil {
		return err
	}
	s.send = send
	opts, err := p.backend.clientOptions()
	if err != nil {
		return err
	}
	reset := kgo.NewOffset().AtEnd()
	if start == streamv1.StartPosition_START_POSITION_EARLIEST {
		reset = kgo.NewOffset().AtStart()
	}
	opts = append(opts,
		kgo.ConsumerGroup(s.group),
		kgo.ConsumeTopics(s.topics...),
		kgo.ConsumeResetOffset(reset),
		kgo.DisableAutoCommit(),
		kgo.SessionTimeout(p.backend.SessionTimeout),
		kgo.RebalanceTimeout(p.backend.RebalanceTimeout),
		kgo.HeartbeatInterval(p.backend.HeartbeatInterval),
		kgo.FetchMaxWait(p.backend.FetchMaxWait),
		// Fetching stops at the outstanding limits, but franz-go still holds one fetch response
		// ahead; sizing it to the byte limit bounds a paused stream's memory.
		kgo.FetchMaxBytes(int32(min(max(s.maxBytes, 1<<20), 50<<20))),
		kgo.FetchMaxPartitionBytes(int32(min(max(s.maxBytes, 64<<10), 1<<20))),
		kgo.OnPartitionsAssigned(s.onAssigned),
		kgo.OnPartitionsRevoked(s.onRevoked),
		kgo.OnPartitionsLost(s.onLost),
		kgo.OnOffsetsFetched(s.onOffsetsFetched),
	)
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("create kafka group client: %w", err)
	}
	s.client = client
	p.streams.Add(1)
	defer p.streams.Done()
	s.log.Debug("subscribe stream started", "group", s.group, "topics", s.topics)

	runCtx, cancel := context.WithCancelCause(ctx)
	var loops sync.WaitGroup
	loops.Add(3)
	// Polling and sending run apart, so the next batch is fetched and built while gRPC encodes
	// and writes the previous one.
	batches := make(chan []*streamv1.Message, 2)
	go func() {
		defer loops.Done()
		defer close(batches)
		if err := s.pollLoop(runCtx, batches); err != nil {
			cancel(err)
		}
	}()
	go func() {
		defer loops.Done()
		for batch := range batches {
			if err := s.deliver(batch); err != nil {
				cancel(err)
				for range batches {
				}
				return
			}
		}
	}()
	go func() {
		defer loops.Done()
		s.commitLoop(runCtx)
	}()
	// The reader may stay blocked in recv until the handler returns and gRPC cancels the stream.
	go func() { cancel(s.recvLoop(runCtx, recv)) }()

	var result error
	select {
	case <-runCtx.Done():
		result = context.Cause(runCtx)
		if errors.Is(result, errClientDone) {
			result = nil
		}
	case <-p.draining:
		result = apierr.New(apierr.ErrUnavailable, "plugin is draining: resubscribe on another replica")
	}
	cancel(errClientDone)
	loops.Wait()
	s.close(ctx)
	return result
}

// newSubscription validates the first request.
func (p *Plugin) newSubscription(ctx context.Context, topics *topics, first *streamv1.SubscribeRequest) (*subscription, streamv1.StartPosition, error) {
	sub := first.GetSubscription()
	if sub == nil {
		return nil, 0, apierr.Invalid("subscription", "the first request must carry subscription")
	}
	if first.GetAck() != nil || first.GetNack() != nil {
		return nil, 0, apierr.Invalid("ack", "the first request must carry only subscription")
	}
	limits := p.limits.Load()
	names := sub.GetTopics()
	if len(names) == 0 {
		names = []string{""} // the configured default topic, if any
	}
	if len(names) > limits.MaxSubscriptionTopics {
		return nil, 0, apierr.Invalid("subscription.topics", "at most %d topics (limits.max_subscription_topics), got %d", limits.MaxSubscriptionTopics, len(names))
	}
	s := &subscription{
		p:           p,
		topicIdx:    map[string]int{},
		parts:       map[topicPartition]*partState{},
		wake:        make(chan struct{}, 1),
		epoch:       rand.Uint32() >> 1, //nolint:gosec // uniqueness across streams, not secrecy: ids are validated against state
		respMax:     limits.MaxResponseBytes,
		stream:      strconv.FormatUint(p.streamIDs.Add(1), 10),
		topicByID:   map[[16]byte]string{},
		fetchedMeta: map[topicPartition]commitMeta{},
	}
	for i, name := range names {
		field := fmt.Sprintf("subscription.topics[%d]", i)
		topic, err := topics.name(field, name)
		if err != nil {
			return nil, 0, err
		}
		if _, err := topics.partitions(ctx, field, topic); err != nil {
			return nil, 0, err
		}
		if _, dup := s.topicIdx[topic]; !dup {
			s.topicIdx[topic] = len(s.topics)
			s.topics = append(s.topics, topic)
			if id := topics.id(topic); id != ([16]byte{}) {
				s.topicByID[id] = topic
			}
		}
	}
	s.group = sub.GetGroup()
	if s.group == "" {
		s.group = p.backend.ConsumerGroup
	}
	if s.group == "" {
		return nil, 0, apierr.Invalid("subscription.group", "required (no backend.consumer_group is configured)")
	}
	if len(s.group) > 255 {
		return nil, 0, apierr.Invalid("subscription.group", "at most 255 characters, got %d", len(s.group))
	}
	switch n := sub.GetMaxOutstandingMessages(); {
	case n == 0:
		s.maxMsgs = limits.DefaultOutstandingMessages
	case n < 0 || int(n) > limits.MaxOutstandingMessages:
		return nil, 0, apierr.Invalid("subscription.max_outstanding_messages", "must be between 0 (default) and %d (limits.max_outstanding_messages), got %d", limits.MaxOutstandingMessages, n)
	default:
		s.maxMsgs = int(n)
	}
	switch n := sub.GetMaxOutstandingBytes(); {
	case n == 0:
		s.maxBytes = limits.DefaultOutstandingBytes
	case n < 0 || n > limits.MaxOutstandingBytes:
		return nil, 0, apierr.Invalid("subscription.max_outstanding_bytes", "must be between 0 (default) and %d (limits.max_outstanding_bytes), got %d", limits.MaxOutstandingBytes, n)
	default:
		s.maxBytes = n
	}
	start := sub.GetStart()
	switch start {
	case streamv1.StartPosition_START_POSITION_UNSPECIFIED:
		start = streamv1.StartPosition_START_POSITION_LATEST
		if p.backend.AutoOffsetReset == OffsetResetEarliest {
			start = streamv1.StartPosition_START_POSITION_EARLIEST
		}
	case streamv1.StartPosition_START_POSITION_EARLIEST, streamv1.StartPosition_START_POSITION_LATEST:
	default:
		return nil, 0, apierr.Invalid("subscription.start", "unknown start position %d", start)
	}
	s.log = p.log.With("group", s.group, "stream", s.stream)
	return s, start, nil
}

// onAssigned starts tracking newly assigned partitions under a fresh epoch.
func (s *subscription) onAssigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	s.p.metrics.rebalances.WithLabelValues(s.group, "assigned").Inc()
	s.mu.Lock()
	defer s.mu.Unlock()
	for topic, parts := range assigned {
		for _, part := range parts {
			s.epoch++
			tp := topicPartition{topic, part}
			st := &partState{
				topicIdx: s.topicIdx[topic], epoch: s.epoch,
				inflight: map[int64]*delivery{}, commitNext: -1, committed: -1, hwm: -1, deliveredEnd: -1,
			}
			if meta, ok := s.fetchedMeta[tp]; ok {
				st.deliveredEnd, st.prior = meta.deliveredEnd, meta.attempts
				delete(s.fetchedMeta, tp)
			}
			s.parts[tp] = st
		}
	}
	s.log.Debug("partitions assigned", "partitions", assigned)
}

// onRevoked commits what was acked in the revoked partitions and forgets them: their in-flight
// ack ids stop matching, and the next owner delivers their unacked messages again.
func (s *subscription) onRevoked(ctx context.Context, cl *kgo.Client, revoked map[string][]int32) {
	if len(revoked) == 0 {
		return
	}
	s.p.metrics.rebalances.WithLabelValues(s.group, "revoked").Inc()
	commit := s.drop(revoked, true)
	s.commit(ctx, cl, commit)
	s.log.Debug("partitions revoked", "partitions", revoked)
}

// onLost forgets partitions the member no longer owns; committing would fail.
func (s *subscription) onLost(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	if len(lost) == 0 {
		return
	}
	s.p.metrics.rebalances.WithLabelValues(s.group, "lost").Inc()
	s.drop(lost, false)
	s.log.Warn("partitions lost", "partitions", lost)
}

// drop removes partitions from the stream and returns their final commits when wanted.
func (s *subscription) drop(parts map[string][]int32, wantCommit bool) commitBatch {
	s.mu.Lock()
	defer s.mu.Unlock()
	commit := commitBatch{offsets: map[string]map[int32]kgo.EpochOffset{}, meta: map[topicPartition]string{}, versions: map[topicPartition]int{}}
	gone := map[topicPartition]bool{}
	for topic, ps := range parts {
		for _, part := range ps {
			tp := topicPartition{topic, part}
			st := s.parts[tp]
			if st == nil {
				continue
			}
			gone[tp] = true
			for _, d := range st.inflight {
				if !d.acked && !d.parked {
					s.outstanding--
					s.outBytes -= d.size
				}
			}
			if wantCommit && st.commitNext >= 0 && (st.commitNext > st.committed || st.metaVer != st.metaSaved) {
				commit.add(tp, st)
			}
			delete(s.parts, tp)
			s.p.metrics.lag.DeleteLabelValues(s.group, topic, strconv.Itoa(int(part)))
		}
	}
	s.held = filterRecords(s.held, func(r *kgo.Record) bool { return !gone[topicPartition{r.Topic, r.Partition}] })
	kept := s.redeliver[:0]
	for _, d := range s.redeliver {
		if !gone[topicPartition{d.rec.Topic, d.rec.Partition}] {
			kept = append(kept, d)
		}
	}
	s.redeliver = kept
	s.p.metrics.outstanding.WithLabelValues(s.group, s.stream).Set(float64(s.outstanding))
	s.wakeLocked()
	return commit
}

func filterRecords(rs []*kgo.Record, keep func(*kgo.Record) bool) []*kgo.Record {
	out := rs[:0]
	for _, r := range rs {
		if keep(r) {
			out = append(out, r)
		}
	}
	return out
}

// wakeLocked tells the poll loop that room or redeliveries appeared.
func (s *subscription) wakeLocked() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
	if s.pollCancel != nil && len(s.redeliver) > 0 {
		s.pollCancel()
	}
}

// pollLoop fetches while there is room under the outstanding limits and sends the messages.
func (s *subscription) pollLoop(ctx context.Context, batches chan<- []*streamv1.Message) error {
	for {
		batch, room, err := s.next()
		if err != nil {
			return err
		}
		if len(batch) > 0 {
			select {
			case batches <- batch:
			case <-ctx.Done():
				return nil
			}
			continue
		}
		if room == 0 {
			select {
			case <-s.wake:
				continue
			case <-ctx.Done():
				return nil
			}
		}
		pollCtx, cancel := context.WithCancel(ctx)
		s.mu.Lock()
		s.pollCancel = cancel
		s.mu.Unlock()
		fetches := s.client.PollRecords(pollCtx, room)
		s.mu.Lock()
		s.pollCancel = nil
		s.mu.Unlock()
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err := s.groupError(fetches); err != nil {
			return err
		}
		if err := fetchError(fetches); err != nil {
			return err
		}
		s.mu.Lock()
		fetches.EachPartition(func(fp kgo.FetchTopicPartition) {
			if st := s.parts[topicPartition{fp.Topic, fp.Partition}]; st != nil {
				st.hwm = fp.HighWatermark
				s.updateLagLocked(fp.Topic, fp.Partition, st)
			}
		})
		fetches.EachRecord(func(r *kgo.Record) { s.held = append(s.held, r) })
		s.mu.Unlock()
	}
}

// groupError ends the stream for group failures that will not heal (authorization, a session
// timeout the brokers refuse); other session losses are logged and franz-go rejoins.
func (s *subscription) groupError(fetches kgo.Fetches) error {
	var out error
	fetches.EachError(func(_ string, _ int32, err error) {
		var session *kgo.ErrGroupSession
		if out != nil || !errors.As(err, &session) {
			return
		}
		switch {
		case errors.Is(err, kerr.GroupAuthorizationFailed):
			out = apierr.New(apierr.ErrPermissionDenied, "subscription.group: the plugin's Kafka user may not join group %q", s.group)
		case errors.Is(err, kerr.TopicAuthorizationFailed):
			out = apierr.New(apierr.ErrPermissionDenied, "subscription.topics: the plugin's Kafka user may not read them")
		case errors.Is(err, kerr.InvalidSessionTimeout):
			out = apierr.New(apierr.ErrFailedPrecondition, "backend.session_timeout is outside the brokers' group.min/max.session.timeout.ms")
		default:
			s.log.Warn("consumer group session lost; rejoining", "error", err)
		}
	})
	return out
}

// next takes what may be sent now: redeliveries first, then held records, within the limits.
// With nothing to send it returns the room left for polling.
func (s *subscription) next() ([]*streamv1.Message, int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*streamv1.Message
	var slab messageSlab
	respBytes := 0
	var now time.Time
	if s.p.backend.AckDeadline > 0 {
		now = time.Now()
	}
	fits := func(size int64) bool {
		if s.outstanding >= s.maxMsgs || respBytes >= s.respMax {
			return false
		}
		return s.outstanding == 0 || s.outBytes+size <= s.maxBytes
	}
	for len(s.redeliver) > 0 {
		d := s.redeliver[0]
		if !fits(d.size) {
			break
		}
		s.redeliver = s.redeliver[1:]
		st := s.parts[topicPartition{d.rec.Topic, d.rec.Partition}]
		if st == nil || st.inflight[d.rec.Offset] != d {
			continue
		}
		d.parked = false
		d.attempt++
		d.sent = now
		st.metaVer++
		s.outstanding++
		s.outBytes += d.size
		respBytes += int(d.size)
		out = append(out, s.messageLocked(&slab, len(s.redeliver)+1, st, d))
		s.p.metrics.redeliveries.WithLabelValues(s.group).Inc()
	}
	for len(s.held) > 0 {
		r := s.held[0]
		size := int64(len(r.Key) + len(r.Value))
		if !fits(size) {
			break
		}
		s.held = s.held[1:]
		st := s.parts[topicPartition{r.Topic, r.Partition}]
		if st == nil {
			continue // revoked while held
		}
		if _, dup := st.inflight[r.Offset]; dup {
			continue
		}
		d := &delivery{rec: r, attempt: 1 + st.priorAttempts(r.Offset), size: size, sent: now}
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
		s.outstanding++
		s.outBytes += size
		respBytes += int(size)
		out = append(out, s.messageLocked(&slab, min(len(s.held)+1, s.maxMsgs-s.outstanding+1), st, d))
	}
	if len(s.held) == 0 {
		s.held = nil
	}
	s.p.metrics.outstanding.WithLabelValues(s.group, s.stream).Set(float64(s.outstanding))
	room := 0
	if len(s.held) == 0 && len(s.redeliver) == 0 && s.outstanding < s.maxMsgs && (s.outstanding == 0 || s.outBytes < s.maxBytes) {
		room = s.maxMsgs - s.outstanding
	}
	return out, room, nil
}

func (s *subscription) messageLocked(slab *messageSlab, want int, st *partState, d *delivery) *streamv1.Message {
	m := slab.message(d.rec, want)
	m.DeliveryAttempt = d.attempt
	m.AckId = ackID{topic: st.topicIdx, partition: d.rec.Partition, epoch: st.epoch, offset: d.rec.Offset, attempt: d.attempt}.String()
	return m
}

func (s *subscription) deliver(msgs []*streamv1.Message) error {
	s.p.metrics.delivered.WithLabelValues("Subscribe").Add(float64(len(msgs)))
	return s.sendResponse(&streamv1.SubscribeResponse{Messages: msgs})
}

func (s *subscription) sendResponse(resp *streamv1.SubscribeResponse) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.closed {
		return errClientDone
	}
	return s.send(resp)
}

// recvLoop applies acks and nacks until the client closes its side.
func (s *subscription) recvLoop(ctx context.Context, recv func() (*streamv1.SubscribeRequest, error)) error {
	for {
		req, err := recv()
		if errors.Is(err, io.EOF) {
			return errClientDone
		}
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if req.GetSubscription() != nil {
			return apierr.Invalid("subscription", "only allowed on the first request")
		}
		if req.GetAck() == nil && req.GetNack() == nil {
			return apierr.Invalid("ack", "every request after the first must carry ack or nack")
		}
		maxIDs := s.p.limits.Load().MaxAckIDs
		for _, f := range []struct {
			name string
			ids  *streamv1.AckIds
		}{{"ack.ack_ids", req.GetAck()}, {"nack.ack_ids", req.GetNack()}} {
			if f.ids == nil {
				continue
			}
			if n := len(f.ids.GetAckIds()); n == 0 || n > maxIDs {
				return apierr.Invalid(f.name, "must hold between 1 and %d ids (limits.max_ack_ids), got %d", maxIDs, n)
			}
		}
		ignored := s.settle(ctx, req.GetAck().GetAckIds(), true)
		ignored = append(ignored, s.settle(ctx, req.GetNack().GetAckIds(), false)...)
		if len(ignored) > 0 {
			if err := s.sendResponse(&streamv1.SubscribeResponse{IgnoredAckIds: ignored}); err != nil {
				return err
			}
		}
	}
}

// settle acks or nacks ids and returns those that matched no outstanding delivery.
func (s *subscription) settle(ctx context.Context, ids []string, ack bool) []string {
	if len(ids) == 0 {
		return nil
	}
	var ignored []string
	var deadLetters []*delivery
	s.mu.Lock()
	for _, raw := range ids {
		id, ok := parseAckID(raw)
		if !ok || id.topic >= len(s.topics) {
			ignored = append(ignored, raw)
			continue
		}
		st := s.parts[topicPartition{s.topics[id.topic], id.partition}]
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
			s.outstanding--
			s.outBytes -= d.size
			d.acked = true
			s.advanceLocked(st)
		} else if s.nackLocked(d) {
			deadLetters = append(deadLetters, d)
		}
	}
	s.p.metrics.outstanding.WithLabelValues(s.group, s.stream).Set(float64(s.outstanding))
	s.wakeLocked()
	s.mu.Unlock()
	for _, d := range deadLetters {
		s.deadLetter(ctx, d)
	}
	return ignored
}

// nackLocked takes an outstanding delivery back: it is queued for redelivery, or reports true
// when it used up its attempts and must be dead-lettered.
func (s *subscription) nackLocked(d *delivery) bool {
	s.outstanding--
	s.outBytes -= d.size
	d.parked = true
	if s.p.backend.MaxDeliveryAttempts > 0 && int(d.attempt) >= s.p.backend.MaxDeliveryAttempts {
		return true
	}
	s.redeliver = append(s.redeliver, d)
	return false
}

// expire nacks deliveries older than backend.ack_deadline, as if the client had nacked them.
func (s *subscription) expire(ctx context.Context, now time.Time) {
	deadline := s.p.backend.AckDeadline
	var deadLetters []*delivery
	s.mu.Lock()
	expired := 0
	for _, st := range s.parts {
		for _, d := range st.inflight {
			if d.acked || d.parked || now.Sub(d.sent) < deadline {
				continue
			}
			expired++
			if s.nackLocked(d) {
				deadLetters = append(deadLetters, d)
			}
		}
	}
	if expired > 0 {
		s.p.metrics.outstanding.WithLabelValues(s.group, s.stream).Set(float64(s.outstanding))
		s.wakeLocked()
	}
	s.mu.Unlock()
	for _, d := range deadLetters {
		s.deadLetter(ctx, d)
	}
}

// advanceLocked moves the commit point over the acked prefix of delivered offsets.
func (s *subscription) advanceLocked(st *partState) {
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

// deadLetter writes a message that used up its attempts to the dead-letter topic and then treats
// it as acked; if that fails it is delivered again. The write outlives the stream: it is settled
// in the group only if the partition is still owned when it completes.
func (s *subscription) deadLetter(ctx context.Context, d *delivery) {
	ctx = context.WithoutCancel(ctx)
	producer, _, topics, err := s.p.clients()
	r := d.rec
	dlq := deadLetterTopic(s.p.backend.DeadLetterTopic, r.Topic)
	if err == nil {
		ctx, cancel := context.WithTimeout(ctx, finalCommitTimeout)
		_, err = topics.partitions(ctx, "dead_letter_topic", dlq)
		cancel()
	}
	if err != nil {
		s.deadLetterDone(d, err)
		return
	}
	out := &kgo.Record{
		Topic:     dlq,
		Partition: -1,
		Key:       r.Key,
		Value:     r.Value,
		Timestamp: r.Timestamp,
		Headers: append(append(make([]kgo.RecordHeader, 0, len(r.Headers)+5), r.Headers...),
			kgo.RecordHeader{Key: HeaderDLQTopic, Value: []byte(r.Topic)},
			kgo.RecordHeader{Key: HeaderDLQPartition, Value: []byte(strconv.Itoa(int(r.Partition)))},
			kgo.RecordHeader{Key: HeaderDLQOffset, Value: []byte(strconv.FormatInt(r.Offset, 10))},
			kgo.RecordHeader{Key: HeaderDLQGroup, Value: []byte(s.group)},
			kgo.RecordHeader{Key: HeaderDLQAttempts, Value: []byte(strconv.Itoa(int(d.attempt)))},
		),
	}
	produceCtx, cancel := context.WithTimeout(ctx, finalCommitTimeout)
	producer.Produce(produceCtx, out, func(_ *kgo.Record, err error) {
		cancel()
		s.deadLetterDone(d, err)
	})
}

func (s *subscription) deadLetterDone(d *delivery, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.parts[topicPartition{d.rec.Topic, d.rec.Partition}]
	if st == nil || st.inflight[d.rec.Offset] != d {
		return // revoked meanwhile: the next owner delivers it again
	}
	if err != nil {
		s.log.Warn("dead-lettering failed; delivering the message again", "topic", d.rec.Topic, "partition", d.rec.Partition, "offset", d.rec.Offset, "error", err)
		s.redeliver = append(s.redeliver, d)
		s.wakeLocked()
		return
	}
	s.p.metrics.deadLettered.WithLabelValues(s.group).Inc()
	d.acked = true
	s.advanceLocked(st)
}

func (s *subscription) updateLagLocked(topic string, part int32, st *partState) {
	base := st.committed
	if base < 0 {
		return
	}
	s.p.metrics.lag.WithLabelValues(s.group, topic, strconv.Itoa(int(part))).Set(float64(max(st.hwm-base, 0)))
}

// commitLoop commits acked prefixes every commit_interval.
// It also expires deliveries past backend.ack_deadline, checking a few times per deadline.
func (s *subscription) commitLoop(ctx context.Context) {
	t := time.NewTicker(s.p.backend.CommitInterval)
	defer t.Stop()
	var expiry <-chan time.Time
	if d := s.p.backend.AckDeadline; d > 0 {
		et := time.NewTicker(min(max(d/4, 10*time.Millisecond), time.Second))
		defer et.Stop()
		expiry = et.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.commit(ctx, s.client, s.pending())
		case now := <-expiry:
			s.expire(ctx, now)
		}
	}
}

// pending returns the commits not yet made, with their metadata.
func (s *subscription) pending() commitBatch {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := commitBatch{offsets: map[string]map[int32]kgo.EpochOffset{}, meta: map[topicPartition]string{}, versions: map[topicPartition]int{}}
	for tp, st := range s.parts {
		if st.commitNext < 0 || (st.commitNext <= st.committed && st.metaVer == st.metaSaved) {
			continue
		}
		b.add(tp, st)
	}
	return b
}

// commitBatch is one OffsetCommit: offsets, the metadata string per partition and the state
// version that metadata describes.
type commitBatch struct {
	offsets  map[string]map[int32]kgo.EpochOffset
	meta     map[topicPartition]string
	versions map[topicPartition]int
}

func (b *commitBatch) add(tp topicPartition, st *partState) {
	if b.offsets[tp.topic] == nil {
		b.offsets[tp.topic] = map[int32]kgo.EpochOffset{}
	}
	b.offsets[tp.topic][tp.partition] = kgo.EpochOffset{Epoch: -1, Offset: st.commitNext}
	b.meta[tp] = st.encodeMeta()
	b.versions[tp] = st.metaVer
}

// commit writes offsets synchronously and records what the brokers accepted.
func (s *subscription) commit(ctx context.Context, cl *kgo.Client, batch commitBatch) {
	if len(batch.offsets) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalCommitTimeout)
	defer cancel()
	ctx = kgo.PreCommitFnContext(ctx, func(req *kmsg.OffsetCommitRequest) error {
		for i := range req.Topics {
			topic := s.topicName(req.Topics[i].Topic, req.Topics[i].TopicID)
			for j := range req.Topics[i].Partitions {
				p := &req.Topics[i].Partitions[j]
				if m, ok := batch.meta[topicPartition{topic, p.Partition}]; ok {
					p.Metadata = &m
				}
			}
		}
		return nil
	})
	cl.CommitOffsetsSync(ctx, batch.offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			s.log.Warn("commit failed; retrying at the next interval", "error", err)
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, t := range resp.Topics {
			topic := s.topicName(t.Topic, t.TopicID)
			for _, p := range t.Partitions {
				if p.ErrorCode != 0 {
					s.log.Warn("commit of a partition failed", "topic", topic, "partition", p.Partition, "error_code", p.ErrorCode)
					continue
				}
				tp := topicPartition{topic, p.Partition}
				off := batch.offsets[topic][p.Partition].Offset
				st := s.parts[tp]
				if st == nil {
					continue
				}
				st.committed = max(st.committed, off)
				st.metaSaved = max(st.metaSaved, batch.versions[tp])
				if st.hwm >= 0 {
					s.updateLagLocked(topic, p.Partition, st)
				}
			}
		}
	})
}

// topicName resolves a topic named by name or, in newer protocol versions, only by ID.
func (s *subscription) topicName(name string, id [16]byte) string {
	if name != "" {
		return name
	}
	return s.topicByID[id]
}

// onOffsetsFetched reads the delivery counts earlier members left in the commit metadata.
func (s *subscription) onOffsetsFetched(_ context.Context, _ *kgo.Client, resp *kmsg.OffsetFetchResponse) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	apply := func(topic string, part int32, metadata *string) {
		if metadata == nil {
			return
		}
		meta, ok := parseCommitMeta(*metadata)
		if !ok {
			return
		}
		tp := topicPartition{topic, part}
		if st := s.parts[tp]; st != nil {
			st.deliveredEnd, st.prior = meta.deliveredEnd, meta.attempts
			return
		}
		s.fetchedMeta[tp] = meta
	}
	for _, t := range resp.Topics {
		for _, p := range t.Partitions {
			apply(t.Topic, p.Partition, p.Metadata)
		}
	}
	for _, g := range resp.Groups {
		for _, t := range g.Topics {
			topic := s.topicName(t.Topic, t.TopicID)
			for _, p := range t.Partitions {
				apply(topic, p.Partition, p.Metadata)
			}
		}
	}
	return nil
}

// close commits what was acked, leaves the group and releases the stream's metrics.
func (s *subscription) close(ctx context.Context) {
	s.sendMu.Lock()
	s.closed = true
	s.sendMu.Unlock()
	s.commit(ctx, s.client, s.pending())
	s.mu.Lock()
	s.done = true
	s.mu.Unlock()
	s.client.Close()
	s.p.metrics.outstanding.DeleteLabelValues(s.group, s.stream)
	s.log.Debug("subscribe stream ended")
}
