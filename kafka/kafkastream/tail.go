package kafkastream

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/prism-gateway/plugins/core/apierr"
)

// tailIdleCheck is how often a Tail with nothing to read re-checks whether it is finished.
const tailIdleCheck = 250 * time.Millisecond

// tailPartition is the read state of one partition in a Tail.
type tailPartition struct {
	next int64 // next offset to send
	end  int64 // high watermark when the call started
	done bool
}

// tail reads a topic without a group and sends batches until the requested range is exhausted.
// started is called once the start offsets are fixed, so clients can tell when a LATEST tail will
// see what they publish next.
func (p *Plugin) tail(ctx context.Context, req tailRequest, started func() error, send func([]message) error) error {
	_, admin, topics, err := p.clients()
	if err != nil {
		return err
	}
	limits := p.settings.Load().limits
	topic, err := topics.name("topic", req.topic)
	if err != nil {
		return err
	}
	count, err := topics.partitions(ctx, "topic", topic)
	if err != nil {
		return err
	}
	parts, err := tailPartitions(req.partitions, count)
	if err != nil {
		return err
	}
	state, err := tailStart(ctx, admin, topic, parts, req)
	if err != nil {
		return err
	}
	endTime := req.endTime
	if !req.follow {
		for _, st := range state {
			st.done = st.next >= st.end
		}
	}
	if err := started(); err != nil {
		return err
	}
	if allDone(state) {
		return nil
	}

	offsets := map[int32]kgo.Offset{}
	for part, st := range state {
		if !st.done {
			offsets[part] = kgo.NewOffset().At(st.next)
		}
	}
	opts, err := p.backend.clientOptions()
	if err != nil {
		return err
	}
	opts = append(opts,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}),
		kgo.FetchMaxWait(p.backend.FetchMaxWait),
	)
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("create kafka tail client: %w", err)
	}
	p.streams.Add(1)
	defer p.streams.Done()
	defer client.Close()

	for {
		pollCtx, cancel := context.WithTimeout(ctx, tailIdleCheck)
		fetches := client.PollRecords(pollCtx, 1000)
		cancel()
		if err := ctx.Err(); err != nil {
			return err
		}
		select {
		case <-p.draining:
			return apierr.New(apierr.ErrUnavailable, "plugin is draining: resume the tail on another replica")
		default:
		}
		if err := fetchError(fetches); err != nil {
			return err
		}
		var batch []message
		batchBytes := 0
		flush := func() error {
			if len(batch) == 0 {
				return nil
			}
			p.metrics.delivered.WithLabelValues("Tail").Add(float64(len(batch)))
			err := send(batch)
			batch, batchBytes = nil, 0
			return err
		}
		var sendErr error
		left := fetches.NumRecords()
		fetches.EachRecord(func(r *kgo.Record) {
			left--
			st := state[r.Partition]
			if sendErr != nil || st == nil || st.done || r.Offset < st.next {
				return
			}
			if !endTime.IsZero() && r.Timestamp.After(endTime) {
				st.done = true
				return
			}
			st.next = r.Offset + 1
			if !req.follow && st.next >= st.end {
				st.done = true
			}
			if batch == nil {
				batch = make([]message, 0, min(left+1, 1000))
			}
			batch = append(batch, message{rec: r})
			batchBytes += len(r.Key) + len(r.Value)
			if batchBytes >= limits.MaxResponseBytes || len(batch) >= 1000 {
				sendErr = flush()
			}
		})
		if sendErr == nil {
			sendErr = flush()
		}
		if sendErr != nil {
			return sendErr
		}
		// A followed partition with an end time is finished once it is caught up and the end
		// time has passed on the wall clock: later records are after it.
		if req.follow && !endTime.IsZero() && time.Now().After(endTime) {
			hwms := map[int32]int64{}
			fetches.EachPartition(func(fp kgo.FetchTopicPartition) { hwms[fp.Partition] = fp.HighWatermark })
			for part, st := range state {
				if hw, ok := hwms[part]; ok && hw > st.end {
					st.end = hw
				}
				if !st.done && st.next >= st.end && client.BufferedFetchRecords() == 0 {
					st.done = true
				}
			}
		}
		var finished []int32
		for part, st := range state {
			if st.done {
				finished = append(finished, part)
			}
		}
		if len(finished) == len(state) {
			return nil
		}
		if len(finished) > 0 {
			client.PauseFetchPartitions(map[string][]int32{topic: finished})
		}
	}
}

func allDone(state map[int32]*tailPartition) bool {
	for _, st := range state {
		if !st.done {
			return false
		}
	}
	return true
}

// tailStart resolves the start and end offsets of each partition with ListOffsets.
func tailStart(ctx context.Context, admin *kadm.Client, topic string, parts []int32, req tailRequest) (map[int32]*tailPartition, error) {
	ends, err := admin.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, topicError(topic, fmt.Errorf("list end offsets: %w", err))
	}
	var starts kadm.ListedOffsets
	switch {
	case !req.startTime.IsZero():
		starts, err = admin.ListOffsetsAfterMilli(ctx, req.startTime.UnixMilli(), topic)
	case req.latest:
		starts = ends
	default:
		starts, err = admin.ListStartOffsets(ctx, topic)
	}
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, topicError(topic, fmt.Errorf("list start offsets: %w", err))
	}
	state := make(map[int32]*tailPartition, len(parts))
	for _, part := range parts {
		end, ok := ends.Lookup(topic, part)
		if !ok {
			return nil, apierr.Unavailable("list end offsets", fmt.Errorf("no offset for %s/%d", topic, part))
		}
		st := &tailPartition{end: end.Offset, next: end.Offset}
		if start, ok := starts.Lookup(topic, part); ok && start.Offset >= 0 {
			st.next = start.Offset
		}
		if n := req.lastN; n > 0 {
			logStart := st.next // ListStartOffsets for last_n
			st.next = max(logStart, st.end-n)
		}
		state[part] = st
	}
	return state, nil
}

// fetchError returns the first fetch error that should end a read; a poll cut short by its own
// deadline is not one.
func fetchError(fetches kgo.Fetches) error {
	var out error
	fetches.EachError(func(topic string, part int32, err error) {
		var session *kgo.ErrGroupSession
		if out != nil || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || errors.As(err, &session) {
			return
		}
		if errors.Is(err, kgo.ErrClientClosed) {
			out = apierr.New(apierr.ErrUnavailable, "kafka client closed")
			return
		}
		out = topicError(topic, fmt.Errorf("fetch partition %d: %w", part, err))
	})
	return out
}
