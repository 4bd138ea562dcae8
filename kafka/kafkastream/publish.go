package kafkastream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/prism-gateway/plugins/core/apierr"
)

// publishPipelineDepth bounds how many PublishStream requests may wait for their acks at once;
// beyond it (or when the producer holds backend.max_buffered_bytes) the stream stops reading,
// which pushes back on the client through gRPC flow control.
const publishPipelineDepth = 1024

// prepared is a publishRequest bound to its topic, ready for the producer.
type prepared struct {
	topic   string
	records []*kgo.Record
	bytes   int
}

// prepare resolves the request's topic, checks chosen partitions against it and points the
// records at it.
func (p *Plugin) prepare(ctx context.Context, req publishRequest) (*prepared, error) {
	_, _, topics, err := p.clients()
	if err != nil {
		return nil, err
	}
	topic, err := topics.name("topic", req.topic)
	if err != nil {
		return nil, err
	}
	partitions, err := topics.partitions(ctx, "topic", topic)
	if err != nil {
		return nil, err
	}
	out := &prepared{topic: topic, records: make([]*kgo.Record, len(req.records)), bytes: req.bytes}
	for i := range req.records {
		r := &req.records[i]
		part := r.Partition
		if i == req.negative {
			part = req.negativePartition
		}
		if part != -1 || i == req.negative {
			if err := checkRecordPartition(i, part, partitions, topic); err != nil {
				return nil, err
			}
		}
		r.Topic = topic
		out.records[i] = r
	}
	return out, nil
}

// publish writes one request's records and waits until the brokers acknowledged all of them.
func (p *Plugin) publish(ctx context.Context, req publishRequest) ([]recordAck, error) {
	prep, err := p.prepare(ctx, req)
	if err != nil {
		return nil, err
	}
	producer, _, topics, err := p.clients()
	if err != nil {
		return nil, err
	}
	wait, err := p.publishWait()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	pctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	results, err := produceAll(pctx, producer, prep.records)
	if err != nil {
		p.metrics.produceRecords.WithLabelValues("error").Add(float64(len(prep.records)))
		return nil, p.waitError(ctx, err)
	}
	acks := make([]recordAck, len(results))
	for i, res := range results {
		if res.Err != nil {
			p.metrics.produceRecords.WithLabelValues("error").Add(float64(len(results)))
			return nil, produceError(ctx, topics, prep.topic, i, res.Err)
		}
		acks[i] = recordAck{partition: res.Record.Partition, offset: res.Record.Offset}
	}
	p.observeProduce("Publish", start, prep)
	return acks, nil
}

// produceAll hands records to the producer and waits for all their acknowledgements, or for ctx.
// Unlike ProduceSync it returns when ctx ends even while the brokers hang (records already in a
// produce request cannot be called back until that request times out); the results then arrive
// later and are dropped. Results are in request order.
func produceAll(ctx context.Context, producer *kgo.Client, records []*kgo.Record) ([]kgo.ProduceResult, error) {
	results := make([]kgo.ProduceResult, len(records))
	var remaining atomic.Int32
	remaining.Store(int32(len(records)))
	done := make(chan struct{})
	for i, r := range records {
		producer.Produce(ctx, r, func(r *kgo.Record, err error) {
			results[i] = kgo.ProduceResult{Record: r, Err: err}
			if remaining.Add(-1) == 0 {
				close(done)
			}
		})
	}
	select {
	case <-done:
		return results, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// errBrokersDown refuses a publish while the plugin's health check cannot reach the brokers.
var errBrokersDown = errors.New("the brokers are unreachable (the plugin reports NOT_SERVING)")

// publishWait is how long a publish may wait for its acknowledgements: backend.delivery_timeout,
// or backend.unavailable_publish_wait while the health check cannot reach the brokers, where 0
// refuses the publish before any record is handed to the producer.
func (p *Plugin) publishWait() (time.Duration, error) {
	if !p.brokersDown.Load() {
		return p.backend.DeliveryTimeout, nil
	}
	if p.backend.UnavailablePublishWait == 0 {
		return 0, apierr.Unavailable("publish to kafka", errBrokersDown)
	}
	return p.backend.UnavailablePublishWait, nil
}

// waitError maps a publish whose wait ended: the caller's deadline or cancellation as such, the
// plugin's own bound as UNAVAILABLE.
func (p *Plugin) waitError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if p.brokersDown.Load() {
		return apierr.Unavailable("publish to kafka", fmt.Errorf("%w; waited backend.unavailable_publish_wait (%s)", errBrokersDown, p.backend.UnavailablePublishWait))
	}
	return apierr.Unavailable("produce to kafka", errors.New("the brokers did not acknowledge the records within backend.delivery_timeout"))
}

func (p *Plugin) observeProduce(method string, start time.Time, prep *prepared) {
	p.metrics.produceLatency.WithLabelValues(method).Observe(time.Since(start).Seconds())
	p.metrics.produceBytes.Add(float64(prep.bytes))
	p.metrics.produceRecords.WithLabelValues("ok").Add(float64(len(prep.records)))
}

// produceError maps a producer failure for records[i] to an API error; ctx is the caller's, so
// that the plugin's own delivery timeout reads as UNAVAILABLE, not as the caller's deadline.
func produceError(ctx context.Context, topics *topics, topic string, i int, err error) error {
	field := "records[" + strconv.Itoa(i) + "]"
	switch {
	case (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) && ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, context.DeadlineExceeded):
		return apierr.Unavailable("produce to kafka", errors.New("the brokers did not take the records within backend.delivery_timeout"))
	case errors.Is(err, kerr.MessageTooLarge), errors.Is(err, kerr.RecordListTooLarge):
		return apierr.Invalid(field, "record is larger than the brokers accept (backend.batch_max_bytes, topic max.message.bytes): %v", err)
	case errors.Is(err, kerr.InvalidTimestamp):
		return apierr.Invalid(field+".timestamp", "rejected by the brokers (outside the topic's message.timestamp limits)")
	case errors.Is(err, kerr.UnknownTopicOrPartition):
		topics.forget(topic)
		return apierr.New(apierr.ErrNotFound, "topic: topic %q does not exist", topic)
	case errors.Is(err, kerr.TopicAuthorizationFailed):
		return apierr.New(apierr.ErrPermissionDenied, "topic %q: the plugin's Kafka user may not write to it", topic)
	}
	return apierr.Unavailable("produce to kafka", err)
}

// pendingPublish is one PublishStream request waiting for its acks.
type pendingPublish struct {
	prep      *prepared
	result    publishResult
	start     time.Time
	ctx       context.Context    // bounds the wait for this request's acks (publishWait)
	cancel    context.CancelFunc // ends the request's delivery timeout once every record settled
	remaining atomic.Int32
	done      chan struct{}
	errOnce   sync.Once
	errIndex  int
	err       error
}

func (pp *pendingPublish) fail(i int, err error) {
	pp.errOnce.Do(func() { pp.errIndex, pp.err = i, err })
}

// publishStream pipelines requests: a reader hands records to the producer as they arrive, and a
// writer sends each request's response, in request order, once all its records are acknowledged.
// recv returns each checked request (its error ends the stream after the earlier requests'
// responses), send writes each result.
func (p *Plugin) publishStream(ctx context.Context, recv func() (publishRequest, error), send func(publishResult) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	queue := make(chan *pendingPublish, publishPipelineDepth)
	readerDone := make(chan error, 1)
	// The reader may stay blocked in recv after a failed write; returning from the handler
	// cancels the stream, which releases it.
	go func() {
		err := p.publishReader(ctx, recv, queue)
		close(queue)
		readerDone <- err
	}()
	if err := p.publishWriter(ctx, queue, send, cancel); err != nil {
		return err
	}
	if err := <-readerDone; !errors.Is(err, errClientDone) {
		return err
	}
	return nil
}

// errClientDone marks the client closing its side of a stream.
var errClientDone = errors.New("client closed the stream")

func (p *Plugin) publishReader(ctx context.Context, recv func() (publishRequest, error), queue chan<- *pendingPublish) error {
	producer, _, topics, err := p.clients()
	if err != nil {
		return err
	}
	for {
		req, err := recv()
		if errors.Is(err, io.EOF) {
			return errClientDone
		}
		if err != nil {
			return err
		}
		prep, err := p.prepare(ctx, req)
		var wait time.Duration
		if err == nil {
			wait, err = p.publishWait()
		}
		if err != nil {
			// Earlier requests still get their responses; this error ends the stream after them.
			pp := &pendingPublish{ctx: ctx, done: make(chan struct{})}
			pp.fail(0, err)
			close(pp.done)
			select {
			case queue <- pp:
			case <-ctx.Done():
			}
			return nil
		}
		n := len(prep.records)
		pp := &pendingPublish{
			prep:   prep,
			start:  time.Now(),
			done:   make(chan struct{}),
			result: publishResult{sequence: req.sequence, acks: make([]recordAck, n)},
		}
		pp.remaining.Store(int32(n))
		rctx, cancel := context.WithTimeout(ctx, wait)
		pp.ctx, pp.cancel = rctx, cancel
		// One callback for the whole request, not a closure per record: the producer sets each
		// record's partition and offset before calling back, so the last callback reads them all.
		settled := func(r *kgo.Record, err error) {
			if err != nil {
				i := slices.Index(prep.records, r)
				pp.fail(i, produceError(ctx, topics, prep.topic, i, err))
			}
			if pp.remaining.Add(-1) == 0 {
				for i, r := range prep.records {
					pp.result.acks[i] = recordAck{partition: r.Partition, offset: r.Offset}
				}
				close(pp.done) // before cancel: the writer reads a cancelled ctx as settled
				pp.cancel()
			}
		}
		for _, r := range prep.records {
			producer.Produce(rctx, r, settled)
		}
		select {
		case queue <- pp:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

func (p *Plugin) publishWriter(ctx context.Context, queue <-chan *pendingPublish, send func(publishResult) error, cancel context.CancelCauseFunc) error {
	for pp := range queue {
		select {
		case <-pp.done:
		case <-pp.ctx.Done():
			select {
			case <-pp.done: // settled just now
			default:
				// The brokers hang: the request's wait is over although its records have not
				// been called back (they will be, and their results are dropped).
				if ctx.Err() == nil {
					pp.fail(0, p.waitError(ctx, pp.ctx.Err()))
				}
			}
		case <-ctx.Done():
			// Records already handed over finish on their own; their promises need nothing from us.
			return context.Cause(ctx)
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if pp.err != nil {
			if pp.prep != nil {
				p.metrics.produceRecords.WithLabelValues("error").Add(float64(len(pp.prep.records)))
			}
			cancel(pp.err)
			return pp.err
		}
		p.observeProduce("PublishStream", pp.start, pp.prep)
		if err := send(pp.result); err != nil {
			cancel(err)
			return err
		}
	}
	return nil
}
