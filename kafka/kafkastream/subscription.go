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

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/prism-gateway/plugins/core/apierr"
)

// subscription is one Subscribe stream: a consumer-group member whose deliveries are settled by
// the client's acks and nacks. The group callbacks are in group.go, the delivery bookkeeping in
// ledger.go.
type subscription struct {
	p      *Plugin
	log    *slog.Logger
	group  string
	stream string
	client *kgo.Client
	// topicByID names topics in commit and offset-fetch messages that carry only topic IDs.
	topicByID map[[16]byte]string

	sendMu sync.Mutex
	send   func(subscribeResponse) error
	closed bool

	mu         sync.Mutex
	ledger     *ledger
	wake       chan struct{}
	pollCancel context.CancelFunc
}

// subscribe runs one Subscribe stream, opened with req (checked by subscriptionOf), until the
// client ends it, the plugin drains, or an error. recv returns each later request, checked.
func (p *Plugin) subscribe(ctx context.Context, req subscriptionRequest, recv func() (settleRequest, error), send func(subscribeResponse) error) error {
	_, _, topics, err := p.clients()
	if err != nil {
		return err
	}
	s, err := p.newSubscription(ctx, topics, req)
	if err != nil {
		return err
	}
	s.send = send
	opts, err := s.clientOptions(req)
	if err != nil {
		return err
	}
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("create kafka group client: %w", err)
	}
	s.client = client
	p.streams.Add(1)
	defer p.streams.Done()
	s.log.Debug("subscribe stream started", "group", s.group, "topics", req.topics)

	runCtx, cancel := context.WithCancelCause(ctx)
	var loops sync.WaitGroup
	loops.Add(3)
	// Polling and sending run apart, so the next batch is fetched and built while gRPC encodes
	// and writes the previous one.
	batches := make(chan []message, 2)
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

// newSubscription checks that the subscription's topics exist and sets up its ledger.
func (p *Plugin) newSubscription(ctx context.Context, topics *topics, req subscriptionRequest) (*subscription, error) {
	limits := p.settings.Load().limits
	s := &subscription{
		p:         p,
		group:     req.group,
		wake:      make(chan struct{}, 1),
		stream:    strconv.FormatUint(p.streamIDs.Add(1), 10),
		topicByID: map[[16]byte]string{},
	}
	for i, topic := range req.topics {
		if _, err := topics.partitions(ctx, req.fields[i], topic); err != nil {
			return nil, err
		}
		if id := topics.id(topic); id != ([16]byte{}) {
			s.topicByID[id] = topic
		}
	}
	epoch := rand.Uint32() >> 1 //nolint:gosec // uniqueness across streams, not secrecy: ids are validated against state
	s.ledger = newLedger(req.topics, req.maxMsgs, req.maxBytes, limits.MaxResponseBytes, p.backend.MaxDeliveryAttempts, epoch)
	s.log = p.log.With("group", s.group, "stream", s.stream)
	return s, nil
}

// wakeLocked tells the poll loop that room or redeliveries appeared.
func (s *subscription) wakeLocked() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
	if s.pollCancel != nil && len(s.ledger.redeliver) > 0 {
		s.pollCancel()
	}
}

// pollLoop fetches while there is room under the outstanding limits and sends the messages.
func (s *subscription) pollLoop(ctx context.Context, batches chan<- []message) error {
	for {
		batch, room := s.next()
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
			tp := topicPartition{fp.Topic, fp.Partition}
			if st := s.ledger.setHighWatermark(tp, fp.HighWatermark); st != nil {
				s.updateLagLocked(tp, st)
			}
		})
		fetches.EachRecord(s.ledger.hold)
		s.mu.Unlock()
	}
}

// next takes the messages that may be sent now; with none, it returns the room left for polling.
// Each message is a copy: the ledger changes a delivery's ack id and attempt on redelivery.
func (s *subscription) next() ([]message, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var now time.Time
	if s.p.backend.AckDeadline > 0 {
		now = time.Now()
	}
	ds, redelivered, room := s.ledger.next(now)
	var out []message
	if len(ds) > 0 {
		out = make([]message, len(ds))
		for i, d := range ds {
			out[i] = message{rec: d.rec, ackID: d.ackID, attempt: d.attempt}
		}
	}
	if redelivered > 0 {
		s.p.metrics.redeliveries.WithLabelValues(s.group).Add(float64(redelivered))
	}
	s.p.metrics.outstanding.WithLabelValues(s.group, s.stream).Set(float64(s.ledger.outstanding))
	return out, room
}

func (s *subscription) deliver(msgs []message) error {
	s.p.metrics.delivered.WithLabelValues("Subscribe").Add(float64(len(msgs)))
	return s.sendResponse(subscribeResponse{messages: msgs})
}

func (s *subscription) sendResponse(resp subscribeResponse) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.closed {
		return errClientDone
	}
	return s.send(resp)
}

// recvLoop applies acks and nacks until the client closes its side.
func (s *subscription) recvLoop(ctx context.Context, recv func() (settleRequest, error)) error {
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
		ignored := s.settle(ctx, req.acks, true)
		ignored = append(ignored, s.settle(ctx, req.nacks, false)...)
		if len(ignored) > 0 {
			if err := s.sendResponse(subscribeResponse{ignored: ignored}); err != nil {
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
	s.mu.Lock()
	ignored, deadLetters := s.ledger.settle(ids, ack)
	s.p.metrics.outstanding.WithLabelValues(s.group, s.stream).Set(float64(s.ledger.outstanding))
	s.wakeLocked()
	s.mu.Unlock()
	s.deadLetterAll(ctx, deadLetters)
	return ignored
}

// expire nacks deliveries older than backend.ack_deadline, as if the client had nacked them.
func (s *subscription) expire(ctx context.Context, now time.Time) {
	s.mu.Lock()
	expired, deadLetters := s.ledger.expire(now, s.p.backend.AckDeadline)
	if expired > 0 {
		s.p.metrics.outstanding.WithLabelValues(s.group, s.stream).Set(float64(s.ledger.outstanding))
		s.wakeLocked()
	}
	s.mu.Unlock()
	s.deadLetterAll(ctx, deadLetters)
}

// close commits what was acked, leaves the group and releases the stream's metrics.
func (s *subscription) close(ctx context.Context) {
	s.sendMu.Lock()
	s.closed = true
	s.sendMu.Unlock()
	s.commit(ctx, s.client, s.pending())
	s.client.Close()
	s.p.metrics.outstanding.DeleteLabelValues(s.group, s.stream)
	s.log.Debug("subscribe stream ended")
}
