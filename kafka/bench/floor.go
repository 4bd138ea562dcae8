package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	streamv1 "github.com/prism-gateway/plugins/gen/prism/stream/v1"
)

// The floor process's settings, set by the benchmark.
const (
	floorBrokersEnv     = "PRISM_BENCH_FLOOR_KAFKA_BROKERS"
	floorLingerEnv      = "PRISM_BENCH_FLOOR_KAFKA_LINGER"
	floorCompressionEnv = "PRISM_BENCH_FLOOR_KAFKA_COMPRESSION"
)

// floorResponseBytes cuts a Subscribe response, as the plugin's limits.max_response_bytes does
// by default, so both send messages of the same size.
const floorResponseBytes = 1 << 20

// floor serves the Stream messages with the franz-go calls the direct side makes and nothing
// else: no validation, no limits, no flow control, no redelivery, one topic per subscription.
type floor struct {
	streamv1.UnimplementedStreamServiceServer
	brokers  []string
	producer *kgo.Client
}

// registerFloor is the floor process's setup (benchkit.FloorFunc).
func registerFloor(ctx context.Context, srv *grpc.Server) (func(), error) {
	linger, err := time.ParseDuration(os.Getenv(floorLingerEnv))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", floorLingerEnv, err)
	}
	brokers := strings.Split(os.Getenv(floorBrokersEnv), ",")
	producer, err := newProducer(brokers, linger, os.Getenv(floorCompressionEnv))
	if err != nil {
		return nil, err
	}
	if err := producer.Ping(ctx); err != nil {
		producer.Close()
		return nil, fmt.Errorf("ping kafka: %w", err)
	}
	streamv1.RegisterStreamServiceServer(srv, &floor{brokers: brokers, producer: producer})
	return producer.Close, nil
}

// records turns a request into franz-go records (key and value only: the benchmark sends no
// headers, partitions or timestamps).
func records(req *streamv1.PublishRequest) []*kgo.Record {
	recs := make([]*kgo.Record, len(req.GetRecords()))
	for i, r := range req.GetRecords() {
		recs[i] = &kgo.Record{Topic: req.GetTopic(), Key: r.GetKey(), Value: r.GetValue()}
	}
	return recs
}

func acks(recs []*kgo.Record) []*streamv1.RecordAck {
	out := make([]*streamv1.RecordAck, len(recs))
	for i, r := range recs {
		out[i] = &streamv1.RecordAck{Partition: r.Partition, Offset: r.Offset}
	}
	return out
}

func (f *floor) Publish(ctx context.Context, req *streamv1.PublishRequest) (*streamv1.PublishResponse, error) {
	recs := records(req)
	if err := f.producer.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return nil, err
	}
	return &streamv1.PublishResponse{Acks: acks(recs), Sequence: req.GetSequence()}, nil
}

// PublishStream produces each request's records asynchronously as it arrives and answers the
// requests in order, each once all its records are acknowledged.
func (f *floor) PublishStream(stream grpc.BidiStreamingServer[streamv1.PublishRequest, streamv1.PublishResponse]) error {
	ctx := stream.Context()
	type pending struct {
		seq  int64
		recs []*kgo.Record
		done chan error
	}
	queue := make(chan *pending, 1024)
	sent := make(chan error, 1)
	go func() {
		for p := range queue {
			err := <-p.done
			if err == nil {
				err = stream.Send(&streamv1.PublishResponse{Acks: acks(p.recs), Sequence: p.seq})
			}
			if err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			close(queue)
			return <-sent
		}
		if err != nil {
			close(queue)
			return err
		}
		p := &pending{seq: req.GetSequence(), recs: records(req), done: make(chan error, 1)}
		var left atomic.Int64
		left.Store(int64(len(p.recs)))
		var failed atomic.Pointer[error]
		for _, r := range p.recs {
			f.producer.Produce(ctx, r, func(_ *kgo.Record, err error) {
				if err != nil {
					failed.CompareAndSwap(nil, &err)
				}
				if left.Add(-1) == 0 {
					if e := failed.Load(); e != nil {
						p.done <- *e
					} else {
						p.done <- nil
					}
				}
			})
		}
		select {
		case queue <- p:
		case err := <-sent:
			return err
		}
	}
}

// Subscribe reads the subscription's topic as a member of its group and marks each acked
// offset for the client's periodic commit.
func (f *floor) Subscribe(stream grpc.BidiStreamingServer[streamv1.SubscribeRequest, streamv1.SubscribeResponse]) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	sub := first.GetSubscription()
	reset := kgo.NewOffset().AtEnd()
	if sub.GetStart() == streamv1.StartPosition_START_POSITION_EARLIEST {
		reset = kgo.NewOffset().AtStart()
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(f.brokers...), kgo.ConsumerGroup(sub.GetGroup()),
		kgo.ConsumeTopics(sub.GetTopics()...), kgo.ConsumeResetOffset(reset), kgo.AutoCommitMarks())
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	acked := make(chan error, 1)
	go func() {
		defer cancel() // the client is done (or gone): stop polling
		for {
			req, err := stream.Recv()
			if err != nil {
				acked <- err
				return
			}
			marks := map[string]map[int32]kgo.EpochOffset{}
			for _, id := range req.GetAck().GetAckIds() {
				topic, partition, offset, err := parseAckID(id)
				if err != nil {
					acked <- err
					return
				}
				if marks[topic] == nil {
					marks[topic] = map[int32]kgo.EpochOffset{}
				}
				if offset+1 > marks[topic][partition].Offset {
					marks[topic][partition] = kgo.EpochOffset{Epoch: -1, Offset: offset + 1}
				}
			}
			cl.MarkCommitOffsets(marks)
		}
	}()
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			break
		}
		if err := fetches.Err0(); err != nil {
			return err
		}
		err := sendFetches(fetches, true, func(msgs []*streamv1.Message) error {
			return stream.Send(&streamv1.SubscribeResponse{Messages: msgs})
		})
		if err != nil {
			return err
		}
	}
	if err := <-acked; !errors.Is(err, io.EOF) && stream.Context().Err() == nil {
		return err
	}
	return nil
}

// Tail reads the topic from its start with a groupless consumer and streams what it fetches,
// cut at floorResponseBytes, until the client goes away (the benchmark reads a known count).
func (f *floor) Tail(req *streamv1.TailRequest, stream grpc.ServerStreamingServer[streamv1.TailResponse]) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(f.brokers...), kgo.ConsumeTopics(req.GetTopic()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx := stream.Context()
	for {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err := fetches.Err0(); err != nil {
			return err
		}
		err := sendFetches(fetches, false, func(msgs []*streamv1.Message) error {
			return stream.Send(&streamv1.TailResponse{Messages: msgs})
		})
		if err != nil {
			return err
		}
	}
}

// sendFetches sends the fetched records as messages in responses cut at floorResponseBytes;
// withAckIDs gives each the floor's "topic:partition:offset" ack id and attempt 1 (Subscribe).
func sendFetches(fetches kgo.Fetches, withAckIDs bool, send func([]*streamv1.Message) error) error {
	var msgs []*streamv1.Message
	size := 0
	var sendErr error
	fetches.EachRecord(func(r *kgo.Record) {
		if sendErr != nil {
			return
		}
		if n := len(r.Key) + len(r.Value); size+n > floorResponseBytes && len(msgs) > 0 {
			sendErr = send(msgs)
			msgs, size = nil, 0
		}
		size += len(r.Key) + len(r.Value)
		m := &streamv1.Message{
			Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Key: r.Key, Value: r.Value,
			Timestamp: timestamppb.New(r.Timestamp),
		}
		if withAckIDs {
			m.DeliveryAttempt = 1
			m.AckId = r.Topic + ":" + strconv.Itoa(int(r.Partition)) + ":" + strconv.FormatInt(r.Offset, 10)
		}
		msgs = append(msgs, m)
	})
	if sendErr == nil && len(msgs) > 0 {
		sendErr = send(msgs)
	}
	return sendErr
}

// parseAckID reads the floor's "topic:partition:offset" ack ids.
func parseAckID(id string) (string, int32, int64, error) {
	j := strings.LastIndexByte(id, ':')
	i := strings.LastIndexByte(id[:max(j, 0)], ':')
	if i < 0 {
		return "", 0, 0, fmt.Errorf("ack id %q: want topic:partition:offset", id)
	}
	p, err := strconv.ParseInt(id[i+1:j], 10, 32)
	if err != nil {
		return "", 0, 0, fmt.Errorf("ack id %q: %w", id, err)
	}
	o, err := strconv.ParseInt(id[j+1:], 10, 64)
	if err != nil {
		return "", 0, 0, fmt.Errorf("ack id %q: %w", id, err)
	}
	return id[:i], int32(p), o, nil
}
