package kafkastream

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/prism-gateway/plugins/core/apierr"
)

// finalCommitTimeout bounds the commit a stream makes when it ends or loses partitions.
const finalCommitTimeout = 10 * time.Second

// clientOptions configures the stream's own group client: manual commits, and fetching sized
// to the subscription's byte limit.
func (s *subscription) clientOptions(req subscriptionRequest) ([]kgo.Opt, error) {
	b := s.p.backend
	opts, err := b.clientOptions()
	if err != nil {
		return nil, err
	}
	reset := kgo.NewOffset().AtEnd()
	if req.earliest {
		reset = kgo.NewOffset().AtStart()
	}
	return append(opts,
		kgo.ConsumerGroup(s.group),
		kgo.ConsumeTopics(req.topics...),
		kgo.ConsumeResetOffset(reset),
		kgo.DisableAutoCommit(),
		kgo.SessionTimeout(b.SessionTimeout),
		kgo.RebalanceTimeout(b.RebalanceTimeout),
		kgo.HeartbeatInterval(b.HeartbeatInterval),
		kgo.FetchMaxWait(b.FetchMaxWait),
		// Fetching stops at the outstanding limits, but franz-go still holds one fetch response
		// ahead; sizing it to the byte limit bounds a paused stream's memory.
		kgo.FetchMaxBytes(int32(min(max(req.maxBytes, 1<<20), 50<<20))),
		kgo.FetchMaxPartitionBytes(int32(min(max(req.maxBytes, 64<<10), 1<<20))),
		kgo.OnPartitionsAssigned(s.onAssigned),
		kgo.OnPartitionsRevoked(s.onRevoked),
		kgo.OnPartitionsLost(s.onLost),
		kgo.OnOffsetsFetched(s.onOffsetsFetched),
	), nil
}

// onAssigned starts tracking newly assigned partitions under a fresh epoch.
func (s *subscription) onAssigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	s.p.metrics.rebalances.WithLabelValues(s.group, "assigned").Inc()
	s.mu.Lock()
	defer s.mu.Unlock()
	for topic, parts := range assigned {
		for _, part := range parts {
			s.ledger.assign(topicPartition{topic, part})
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
	s.commit(ctx, cl, s.drop(revoked, true))
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
func (s *subscription) drop(parts map[string][]int32, wantCommit bool) []commitPoint {
	s.mu.Lock()
	defer s.mu.Unlock()
	gone, commits := s.ledger.drop(parts, wantCommit)
	for _, tp := range gone {
		s.p.metrics.lag.DeleteLabelValues(s.group, tp.topic, strconv.Itoa(int(tp.partition)))
	}
	s.p.metrics.outstanding.WithLabelValues(s.group, s.stream).Set(float64(s.ledger.outstanding))
	s.wakeLocked()
	return commits
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

func (s *subscription) updateLagLocked(tp topicPartition, st *partState) {
	base := st.committed
	if base < 0 {
		return
	}
	s.p.metrics.lag.WithLabelValues(s.group, tp.topic, strconv.Itoa(int(tp.partition))).Set(float64(max(st.hwm-base, 0)))
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
func (s *subscription) pending() []commitPoint {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ledger.pending()
}

// commit writes offsets synchronously and records what the brokers accepted.
func (s *subscription) commit(ctx context.Context, cl *kgo.Client, points []commitPoint) {
	if len(points) == 0 {
		return
	}
	offsets := map[string]map[int32]kgo.EpochOffset{}
	byTP := make(map[topicPartition]commitPoint, len(points))
	for _, c := range points {
		if offsets[c.tp.topic] == nil {
			offsets[c.tp.topic] = map[int32]kgo.EpochOffset{}
		}
		offsets[c.tp.topic][c.tp.partition] = kgo.EpochOffset{Epoch: -1, Offset: c.offset}
		byTP[c.tp] = c
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalCommitTimeout)
	defer cancel()
	ctx = kgo.PreCommitFnContext(ctx, func(req *kmsg.OffsetCommitRequest) error {
		for i := range req.Topics {
			topic := s.topicName(req.Topics[i].Topic, req.Topics[i].TopicID)
			for j := range req.Topics[i].Partitions {
				p := &req.Topics[i].Partitions[j]
				if c, ok := byTP[topicPartition{topic, p.Partition}]; ok {
					p.Metadata = &c.meta
				}
			}
		}
		return nil
	})
	cl.CommitOffsetsSync(ctx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
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
				c, ok := byTP[topicPartition{topic, p.Partition}]
				if !ok {
					continue
				}
				if st := s.ledger.committed(c); st != nil && st.hwm >= 0 {
					s.updateLagLocked(c.tp, st)
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
		if meta, ok := parseCommitMeta(*metadata); ok {
			s.ledger.applyMeta(topicPartition{topic, part}, meta)
		}
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
