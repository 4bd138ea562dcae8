// Package streamtest is the wire-level conformance suite for prism.stream.v1.StreamService. It
// talks gRPC only, so it runs unchanged against every Stream plugin (Apache Kafka, an embedded dev
// backend); the plugin's test supplies a way to make fresh topics.
//
// The three suites share one shape: Run holds a table of named cases, each a function testXxx(e
// env) of one env (its *testing.T, the suite, and its own namespace where the API has them),
// run as a parallel subtest.
package streamtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/prism-gateway/plugins/conformance/advertised"
	streamv1 "github.com/prism-gateway/plugins/gen/prism/stream/v1"
)

// Options describe the plugin under test.
type Options struct {
	// NewTopic creates a topic with the given number of partitions that only this test uses and
	// returns its name. Required.
	NewTopic func(tb testing.TB, partitions int) string
	// Limits the plugin enforces; zero fields are read from the limits it advertises in GetInfo.
	Limits Limits
	// AutoCreatesTopics says the plugin creates unknown topics on first use (auto_create_topics,
	// or a dev backend) instead of answering NOT_FOUND.
	AutoCreatesTopics bool
}

// Limits mirror the plugin's `limits` section, so the suite can probe each bound exactly.
type Limits struct {
	MaxRecordsPerPublish int
	MaxValueBytes        int
	MaxHeaders           int
}

// Timeout bounds every wait for a message; generous, since group joins can take seconds.
const Timeout = 45 * time.Second

// Run runs the whole suite against a StreamService reachable through conn. Every subtest works
// on its own topics and groups, so runs can repeat and run in parallel with others.
func Run(t *testing.T, conn grpc.ClientConnInterface, opts Options) {
	t.Helper()
	require.NotNil(t, opts.NewTopic, "Options.NewTopic is required")
	advertised.Fill(t, conn, map[string]*int{
		"max_records_per_publish": &opts.Limits.MaxRecordsPerPublish, "max_value_bytes": &opts.Limits.MaxValueBytes,
		"max_headers": &opts.Limits.MaxHeaders,
	})
	s := &suite{client: streamv1.NewStreamServiceClient(conn), opts: opts}
	tests := []testCase{
		{"publish acks every record in request order", testPublishAcks},
		{"records keep key, value, headers and timestamp", testRoundTrip},
		{"tombstones and empty values stay apart", testTombstones},
		{"publish stream answers each request in order with its sequence", testPublishStream},
		{"publish stream ends with the first failing request's error", testPublishStreamError},
		{"invalid publish requests name the field", testPublishInvalid},
		{"values at the limit are accepted", testAtLimits},
		{"records with the same key arrive in order", testPerKeyOrder},
		{"tail reads from earliest and latest", testTailPositions},
		{"tail start_time and end_time select a time range", testTailTimeRange},
		{"tail last_n returns the newest records of each partition", testTailLastN},
		{"tail follow sends new records and ends after end_time", testTailFollowEnd},
		{"tail reads only the requested partitions", testTailPartitions},
		{"invalid tail requests name the field", testTailInvalid},
		{"acked messages are not delivered again to the group", testAckedNotRedelivered},
		{"unacked messages go to the next subscriber in the group", testUnackedRedelivered},
		{"nack redelivers with the next delivery attempt", testNackRedelivers},
		{"delivery attempts continue in the next subscriber", testAttemptsCarryOver},
		{"flow control stops at max_outstanding_messages until an ack", testFlowMessages},
		{"flow control stops at max_outstanding_bytes until an ack", testFlowBytes},
		{"unknown and settled ack ids are reported as ignored", testIgnoredAcks},
		{"invalid subscriptions name the field", testSubscribeInvalid},
		{"groups are independent of each other", testGroupsIndependent},
		{"one subscription reads several topics", testSeveralTopics},
	}
	if opts.AutoCreatesTopics {
		tests = append(tests, testCase{"unknown topics are created on first use", testTopicCreated})
	} else {
		tests = append(tests, testCase{"unknown topics are not found", testUnknownTopic})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(env{t: t, s: s})
		})
	}
}

// Group returns a fresh consumer group name.
func Group(tb testing.TB) string {
	tb.Helper()
	return unique("st-group-")
}

// unique returns prefix followed by random hex.
func unique(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

type testCase struct {
	name string
	run  func(e env)
}

// env is what one conformance case runs with: its own *testing.T and the suite (each case makes
// its own topics and groups, so there is no namespace). Cases take it as one value so they read
// as test bodies (failures point at their own lines), not as helpers.
type env struct {
	t *testing.T
	s *suite
}

type suite struct {
	client streamv1.StreamServiceClient
	opts   Options
}

// Record builds a record; headers are key, value pairs.
func Record(key, value string, headers ...string) *streamv1.Record {
	r := &streamv1.Record{Key: []byte(key), Value: []byte(value)}
	for i := 0; i+1 < len(headers); i += 2 {
		r.Headers = append(r.Headers, &streamv1.Header{Key: headers[i], Value: []byte(headers[i+1])})
	}
	return r
}

func (s *suite) publish(t *testing.T, topic string, recs ...*streamv1.Record) []*streamv1.RecordAck {
	t.Helper()
	resp, err := s.client.Publish(t.Context(), &streamv1.PublishRequest{Topic: topic, Records: recs})
	require.NoError(t, err)
	require.Len(t, resp.GetAcks(), len(recs))
	return resp.GetAcks()
}

// publishN publishes n keyless records "<prefix>-<i>" to one partition.
func (s *suite) publishN(t *testing.T, topic string, partition int32, prefix string, n int) {
	t.Helper()
	recs := make([]*streamv1.Record, n)
	for i := range recs {
		recs[i] = Record("", prefix+"-"+strconv.Itoa(i))
		recs[i].Partition = &partition
	}
	s.publish(t, topic, recs...)
}

// Subscriber is an open Subscribe stream read by a background goroutine.
type Subscriber struct {
	stream  streamv1.StreamService_SubscribeClient
	cancel  context.CancelFunc
	msgs    chan *streamv1.Message
	ignored chan []string
	done    chan struct{}
	err     error
}

// Subscribe opens a stream with sub as its first request.
func Subscribe(t *testing.T, client streamv1.StreamServiceClient, sub *streamv1.Subscription) *Subscriber {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	stream, err := client.Subscribe(ctx)
	require.NoError(t, err)
	require.NoError(t, stream.Send(&streamv1.SubscribeRequest{Subscription: sub}))
	sb := &Subscriber{stream: stream, cancel: cancel, msgs: make(chan *streamv1.Message, 100_000), ignored: make(chan []string, 1000), done: make(chan struct{})}
	go func() {
		defer close(sb.done)
		for {
			resp, err := stream.Recv()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					sb.err = err
				}
				return
			}
			for _, m := range resp.GetMessages() {
				sb.msgs <- m
			}
			if ids := resp.GetIgnoredAckIds(); len(ids) > 0 {
				sb.ignored <- ids
			}
		}
	}()
	t.Cleanup(sb.Close)
	return sb
}

// Next waits for n messages.
func (sb *Subscriber) Next(t *testing.T, n int) []*streamv1.Message {
	t.Helper()
	out := make([]*streamv1.Message, 0, n)
	timer := time.NewTimer(Timeout)
	defer timer.Stop()
	for len(out) < n {
		select {
		case m := <-sb.msgs:
			out = append(out, m)
		case <-sb.done:
			// Take what arrived before the end, then give up.
			for len(out) < n && len(sb.msgs) > 0 {
				out = append(out, <-sb.msgs)
			}
			if len(out) < n {
				require.FailNowf(t, "subscribe stream ended", "got %d of %d messages, error: %v", len(out), n, sb.err)
			}
		case <-timer.C:
			require.FailNowf(t, "timed out", "got %d of %d messages within %s", len(out), n, Timeout)
		}
	}
	return out
}

// Messages is the channel the stream's messages arrive on, for tests that read several
// subscribers at once.
func (sb *Subscriber) Messages() <-chan *streamv1.Message { return sb.msgs }

// None asserts that no message arrives within d. It can only miss a bug on a slow machine, never
// fail a correct plugin.
func (sb *Subscriber) None(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case m := <-sb.msgs:
		assert.Failf(t, "unexpected message", "offset %d value %q", m.GetOffset(), m.GetValue())
	case <-time.After(d):
	}
}

// Ack acks ids.
func (sb *Subscriber) Ack(t *testing.T, ids ...string) {
	t.Helper()
	require.NoError(t, sb.stream.Send(&streamv1.SubscribeRequest{Ack: &streamv1.AckIds{AckIds: ids}}))
}

// Nack nacks ids.
func (sb *Subscriber) Nack(t *testing.T, ids ...string) {
	t.Helper()
	require.NoError(t, sb.stream.Send(&streamv1.SubscribeRequest{Nack: &streamv1.AckIds{AckIds: ids}}))
}

// AckAll acks every message in msgs.
func (sb *Subscriber) AckAll(t *testing.T, msgs []*streamv1.Message) {
	t.Helper()
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = m.GetAckId()
	}
	sb.Ack(t, ids...)
}

// Ignored waits for the next ignored_ack_ids report.
func (sb *Subscriber) Ignored(t *testing.T) []string {
	t.Helper()
	select {
	case ids := <-sb.ignored:
		return ids
	case <-time.After(Timeout):
		require.FailNow(t, "no ignored_ack_ids report arrived")
		return nil
	}
}

// Err waits for the stream to end and returns its error (nil after a clean end).
func (sb *Subscriber) Err(t *testing.T) error {
	t.Helper()
	select {
	case <-sb.done:
		return sb.err
	case <-time.After(Timeout):
		require.FailNow(t, "subscribe stream did not end")
		return nil
	}
}

// Close ends the stream from the client side and waits until the server finished it, so the
// member has left its group when Close returns.
func (sb *Subscriber) Close() {
	_ = sb.stream.CloseSend()
	select {
	case <-sb.done:
	case <-time.After(Timeout):
	}
	sb.cancel()
	<-sb.done
}

func (s *suite) sub(topic, group string, start streamv1.StartPosition) *streamv1.Subscription {
	return &streamv1.Subscription{Topics: []string{topic}, Group: group, Start: start}
}

// Tail runs a Tail call and returns everything it sent until it ended by itself.
func Tail(t *testing.T, client streamv1.StreamServiceClient, req *streamv1.TailRequest) ([]*streamv1.Message, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), Timeout)
	defer cancel()
	stream, err := client.Tail(ctx, req)
	if err != nil {
		return nil, err
	}
	var out []*streamv1.Message
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, resp.GetMessages()...)
	}
}

func values(msgs []*streamv1.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = string(m.GetValue())
	}
	return out
}

func seq(prefix string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, prefix+"-"+strconv.Itoa(i))
	}
	return out
}

func requireCode(t *testing.T, err error, code codes.Code, contains string) {
	t.Helper()
	require.Error(t, err)
	st := status.Convert(err)
	require.Equal(t, code, st.Code(), "message: %s", st.Message())
	if contains != "" {
		assert.Contains(t, st.Message(), contains)
	}
}

func testPublishAcks(e env) {
	t, s := e.t, e.s
	topic := s.opts.NewTopic(t, 3)
	var recs []*streamv1.Record
	for i := range 12 {
		r := Record("", "v"+strconv.Itoa(i))
		p := int32(i % 3)
		r.Partition = &p
		recs = append(recs, r)
	}
	acks := s.publish(t, topic, recs...)
	last := map[int32]int64{0: -1, 1: -1, 2: -1}
	for i, a := range acks {
		assert.Equal(t, int32(i%3), a.GetPartition(), "record %d", i)
		assert.Greater(t, a.GetOffset(), last[a.GetPartition()], "record %d", i)
		last[a.GetPartition()] = a.GetOffset()
	}
	// Keyed records land on one partition per key.
	acks = s.publish(t, topic, Record("k", "a"), Record("k", "b"), Record("k", "c"))
	assert.Equal(t, acks[0].GetPartition(), acks[1].GetPartition())
	assert.Equal(t, acks[0].GetPartition(), acks[2].GetPartition())
	assert.Less(t, acks[0].GetOffset(), acks[1].GetOffset())
	assert.Less(t, acks[1].GetOffset(), acks[2].GetOffset())
}

func testRoundTrip(e env) {
	t, s := e.t, e.s
	topic := s.opts.NewTopic(t, 1)
	ts := time.UnixMilli(time.Now().Add(-time.Hour).UnixMilli()).UTC()
	full := Record("key-1", "value-1", "h1", "a", "h2", "", "h1", "b")
	full.Timestamp = timestamppb.New(ts)
	binary := &streamv1.Record{Key: []byte{0, 1, 2, 255}, Value: []byte{255, 0, 10, 13}}
	empty := &streamv1.Record{}
	before := time.Now().Add(-time.Minute)
	acks := s.publish(t, topic, full, binary, empty)

	msgs, err := Tail(t, s.client, &streamv1.TailRequest{Topic: topic, Start: &streamv1.TailRequest_Position{Position: streamv1.StartPosition_START_POSITION_EARLIEST}})
	require.NoError(t, err)
	require.Len(t, msgs, 3)
	m := msgs[0]
	assert.Equal(t, topic, m.GetTopic())
	assert.Equal(t, acks[0].GetOffset(), m.GetOffset())
	assert.Equal(t, []byte("key-1"), m.GetKey())
	assert.Equal(t, []byte("value-1"), m.GetValue())
	require.Len(t, m.GetHeaders(), 3)
	for i, want := range [][2]string{{"h1", "a"}, {"h2", ""}, {"h1", "b"}} {
		assert.Equal(t, want[0], m.GetHeaders()[i].GetKey())
		assert.Equal(t, want[1], string(m.GetHeaders()[i].GetValue()))
	}
	assert.True(t, ts.Equal(m.GetTimestamp().AsTime()), "timestamp %s, want %s", m.GetTimestamp().AsTime(), ts)
	assert.Empty(t, m.GetAckId())
	assert.Zero(t, m.GetDeliveryAttempt())
	assert.Equal(t, []byte{0, 1, 2, 255}, msgs[1].GetKey())
	assert.Equal(t, []byte{255, 0, 10, 13}, msgs[1].GetValue())
	assert.Empty(t, msgs[2].GetKey())
	assert.Empty(t, msgs[2].GetValue())
	assert.True(t, msgs[2].GetTimestamp().AsTime().After(before), "an unset timestamp becomes the publish time")
}

func testTombstones(e env) {
	t, s := e.t, e.s
	topic := s.opts.NewTopic(t, 1)
	s.publish(t, topic,
		&streamv1.Record{Key: []byte("gone"), Tombstone: true},
		&streamv1.Record{Key: []byte("empty"), Value: []byte{}, Headers: []*streamv1.Header{{Key: "blank"}}},
		Record("full", "v"))
	check := func(how string, msgs []*streamv1.Message) {
		t.Helper()
		require.Len(t, msgs, 3, how)
		assert.True(t, msgs[0].GetTombstone(), "%s: a tombstone is reported as one", how)
		assert.Empty(t, msgs[0].GetValue(), how)
		assert.False(t, msgs[1].GetTombstone(), "%s: an empty value is not a tombstone", how)
		assert.Empty(t, msgs[1].GetValue(), how)
		require.Len(t, msgs[1].GetHeaders(), 1, how)
		assert.Equal(t, "blank", msgs[1].GetHeaders()[0].GetKey(), how)
		assert.Empty(t, msgs[1].GetHeaders()[0].GetValue(), how)
		assert.False(t, msgs[2].GetTombstone(), how)
	}
	tailed, err := Tail(t, s.client, &streamv1.TailRequest{Topic: topic, Start: &streamv1.TailRequest_Position{Position: streamv1.StartPosition_START_POSITION_EARLIEST}})
	require.NoError(t, err)
	check("tail", tailed)
	sb := Subscribe(t, s.client, s.sub(topic, Group(t), streamv1.StartPosition_START_POSITION_EARLIEST))
	defer sb.Close()
	check("subscribe", sb.Next(t, 3))
}

func testPublishStream(e env) {
	t, s := e.t, e.s
	topic := s.opts.NewTopic(t, 2)
	stream, err := s.client.PublishStream(t.Context())
	require.NoError(t, err)
	const requests = 100
	for i := range requests {
		recs := []*streamv1.Record{Record(strconv.Itoa(i%7), "a"), Record("", "b"), Record("x", "c")}
		require.NoError(t, stream.Send(&streamv1.PublishRequest{Topic: topic, Records: recs, Sequence: int64(1000 + i)}))
	}
	require.NoError(t, stream.CloseSend())
	for i := range requests {
		resp, err := stream.Recv()
		require.NoError(t, err)
		assert.Equal(t, int64(1000+i), resp.GetSequence())
		assert.Len(t, resp.GetAcks(), 3)
	}
	_, err = stream.Recv()
	require.ErrorIs(t, err, io.EOF)

	msgs, err := Tail(t, s.client, &streamv1.TailRequest{Topic: topic, Start: &streamv1.TailRequest_Position{Position: streamv1.StartPosition_START_POSITION_EARLIEST}})
	require.NoError(t, err)
	assert.Len(t, msgs, 3*requests)
}

func testPublishStreamError(e env) {
	t, s := e.t, e.s
	topic := s.opts.NewTopic(t, 1)
	stream, err := s.client.PublishStream(t.Context())
	require.NoError(t, err)
	require.NoError(t, stream.Send(&streamv1.PublishRequest{Topic: topic, Records: []*streamv1.Record{Record("", "ok")}, Sequence: 1}))
	require.NoError(t, stream.Send(&streamv1.PublishRequest{Topic: topic, Sequence: 2}))
	resp, err := stream.Recv()
	require.NoError(t, err)
	assert.Equal(t, int64(1), resp.GetSequence())
	_, err = stream.Recv()
	requireCode(t, err, codes.InvalidArgument, "records")
}

func testPublishInvalid(e env) {
	t, s := e.t, e.s
	topic := s.opts.NewTopic(t, 2)
	big := make([]byte, s.opts.Limits.MaxValueBytes+1)
	tooMany := make([]*streamv1.Record, s.opts.Limits.MaxRecordsPerPublish+1)
	for i := range tooMany {
		tooMany[i] = Record("", "x")
	}
	manyHeaders := Record("", "x")
	for i := 0; i <= s.opts.Limits.MaxHeaders; i++ {
		manyHeaders.Headers = append(manyHeaders.Headers, &streamv1.Header{Key: "h", Value: []byte("v")})
	}
	p2, pNeg := int32(2), int32(-1)
	tests := []struct {
		name  string
		req   *streamv1.PublishRequest
		field string
	}{
		{"no records", &streamv1.PublishRequest{Topic: topic}, "records"},
		{"too many records", &streamv1.PublishRequest{Topic: topic, Records: tooMany}, "records"},
		{"tombstone with a value", &streamv1.PublishRequest{Topic: topic, Records: []*streamv1.Record{{Value: []byte("x"), Tombstone: true}}}, "records[0].value"},
		{"value over the limit", &streamv1.PublishRequest{Topic: topic, Records: []*streamv1.Record{Record("", "ok"), {Value: big}}}, "records[1].value"},
		{"too many headers", &streamv1.PublishRequest{Topic: topic, Records: []*streamv1.Record{manyHeaders}}, "records[0].headers"},
		{"empty header key", &streamv1.PublishRequest{Topic: topic, Records: []*streamv1.Record{Record("", "x", "", "v")}}, "records[0].headers[0].key"},
		{"partition past the last", &streamv1.PublishRequest{Topic: topic, Records: []*streamv1.Record{{Value: []byte("x"), Partition: &p2}}}, "records[0].partition"},
		{"negative partition", &streamv1.PublishRequest{Topic: topic, Records: []*streamv1.Record{{Value: []byte("x"), Partition: &pNeg}}}, "records[0].partition"},
		{"topic name with a space", &streamv1.PublishRequest{Topic: "bad topic", Records: []*streamv1.Record{Record("", "x")}}, "topic"},
		{"topic name too long", &streamv1.PublishRequest{Topic: string(make([]byte, 250)), Records: []*streamv1.Record{Record("", "x")}}, "topic"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.client.Publish(t.Context(), tc.req)
			requireCode(t, err, codes.InvalidArgument, tc.field)
		})
	}
}

func testUnknownTopic(e env) {
	t, s := e.t, e.s
	missing := unique("st-missing-")
	_, err := s.client.Publish(t.Context(), &streamv1.PublishRequest{Topic: missing, Records: []*streamv1.Record{Record("", "x")}})
	requireCode(t, err, codes.NotFound, missing)
	_, err = Tail(t, s.client, &streamv1.TailRequest{Topic: missing, Start: &streamv1.TailRequest_Position{Position: streamv1.StartPosition_START_POSITION_EARLIEST}})
	requireCode(t, err, codes.NotFound, missing)
	sb := Subscribe(t, s.client, s.sub(missing, Group(t), streamv1.StartPosition_START_POSITION_EARLIEST))
	requireCode(t, sb.Err(t), codes.NotFound, missing)
}

func testTopicCreated(e env) {
	t, s := e.t, e.s
	name := unique("st-created-")
	s.publish(t, name, Record("k", "first"))
	msgs, err := Tail(t, s.client, &streamv1.TailRequest{Topic: name, Start: &streamv1.TailRequest_Position{Position: streamv1.StartPosition_START_POSITION_EARLIEST}})
	require.NoError(t, err)
	assert.Equal(t, []string{"first"}, values(msgs))
}

func testAtLimits(e env) {
	t, s := e.t, e.s
	topic := s.opts.NewTopic(t, 1)
	recs := make([]*streamv1.Record, s.opts.Limits.MaxRecordsPerPublish)
	for i := range recs {
		recs[i] = Record("", "x")
	}
	s.publish(t, topic, recs...)
	// The advertised value limit is reachable: a value of exactly that size is accepted.
	value := make([]byte, s.opts.Limits.MaxValueBytes)
	s.publish(t, topic, &streamv1.Record{Value: value})
}

func testPerKeyOrder(e env) {
	t, s := e.t, e.s
	topic := s.opts.NewTopic(t, 3)
	const keys, perKey = 6, 40
	stream, err := s.client.PublishStream(t.Context())
	require.NoError(t, err)
	for i := range perKey {
		var recs []*streamv1.Record
		for k := range keys {
			recs = append(recs, Record("key-"+strconv.Itoa(k), strconv.Itoa(i)))
		}
		require.NoError(t, stream.Send(&streamv1.PublishRequest{Topic: topic, Records: recs, Sequence: int64(i)}))
	}
	require.NoError(t, stream.CloseSend())
	for range perKey {
		_, err := stream.Recv()
		require.NoError(t, err)
	}
	sb := Subscribe(t, s.client, s.sub(topic, Group(t), streamv1.StartPosition_START_POSITION_EARLIEST))
	next := map[string]int{}
	for range keys * perKey / 20 {
		msgs := sb.Next(t, 20)
		for _, m := range msgs {
			k := string(m.GetKey())
			assert.Equal(t, strconv.Itoa(next[k]), string(m.GetValue()), "key %s", k)
			next[k]++
		}
		sb.AckAll(t, msgs)
	}
	for k := range keys {
		assert.Equal(t, perKey, next["key-"+strconv.Itoa(k)])
	}
}

func testTailPositions(e env) {
	t, s := e.t, e.s
	topic := s.opts.NewTopic(t, 1)
	s.publishN(t, topic, 0, "old", 5)
	msgs, err := Tail(t, s.client, &streamv1.TailRequest{Topic: topic, Start: &streamv1.TailRequest_Position{Position: streamv1.StartPosition_START_POSITION_EARLIEST}})
	require.NoError(t, err)
	assert.Equal(t, seq("old", 0, 5), values(msgs))
	msgs, err = Tail(t, s.client, &streamv1.TailRequest{Topic: topic, Start: &streamv1.TailRequest_Position{Position: streamv1.StartPosition_START_POSITION_LATEST}})
	require.NoError(t, err)
	assert.Empty(t, msgs)

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stream, err := s.client.Tail(ctx, &streamv1.TailRequest{Topic: topic, Follow: true, Start: &streamv1.TailRequest_Position{Position: streamv1.StartPosition_START_POSITION_LATEST}})
	require.NoError(t, err)
	// The call has started once headers arrive; LATEST is resolved before that.
	_, err = stream.Header()
	require.NoError(t, err)
	s.publishN(t, topic, 0, "new", 3)
	var got []*streamv1.Message
	for len(got) < 3 {
		resp, err := stream.Recv()
		require.NoError(t, err)
		got = append(got, resp.GetMessages()...)
	}
	assert.Equal(t, seq("new", 0, 3), values(got))
}

func testTailTimeRange(e env) {
	t, s := e.t, e.s
	topic := s.opts.NewTopic(t, 2)
	base := time.UnixMilli(time.Now().Add(-time.Hour).UnixMilli())
	var recs []*streamv1.Record
	for i := range 10 {
		r := Record("", "t-"+strconv.Itoa(i))
		p := int32(i % 2)
		r.Partition = &p
		r.Timestamp = timestamppb.New(base.Add(time.Duration(i) * time.Second))
		recs = append(recs, r)
	}
	s.publish(t, topic, recs...)
	msgs, err := Tail(t, s.client, &streamv1.TailRequest{
		Topic:   topic,
		Start:   &streamv1.TailRequest_StartTime{StartTime: timestamppb.New(base.Add(3 * time.Second))},
		EndTime: timestamppb.New(base.Add(6 * time.Second)),
	})
	require.NoError(t, err)
	assert.ElementsMatch(t, seq("t", 3, 7), values(msgs))

	msgs, err = Tail(t, s.client, &streamv1.TailRequest{Topic: topic, Start: &streamv1.TailRequest_StartTime{StartTime: timestamppb.New(base.Add(8 * time.Second))}})
	require.NoError(t, err)
	assert.ElementsMatch(t, seq("t", 8, 10), values(msgs))

	msgs, err = Tail(t, s.client, &streamv1.TailRequest{Topic: topic, Start: &streamv1.TailRequest_StartTime{StartTime: timestamppb.New(base.Add(time.Hour))}})
	require.NoError(t, err)
	assert.Empty(t, msgs)
}

func testTailLastN(e env) {
	t, s := e.t, e.s
	topic := s.opts.NewTopic(t, 2)
	s.publishN(t, topic, 0, "p0", 10)
	s.publishN(t, topic, 1, "p1", 2)
	msgs, err := Tail(t, s.client, &streamv1.TailRequest{Topic: topic, Start: &streamv1.TailRequest_LastN{LastN: 3}})
	require.NoError(t, err)
	assert.ElementsMatch(t, append(seq("p0", 7, 10), seq("p1", 0, 2)...), values(msgs))
	byPart := map[int32][]string{}
	for _, m := range msgs {
		byPart[m.GetPartition()] = append(byPart[m.GetPartition()], string(m.GetValue()))
	}
	assert.Equal(t, seq("p0", 7, 10), byPart[0], "in offset order")
}

func testTailFollowEnd(e env) {
	t, s := e.t, e.s
	topic := s.opts.NewTopic(t, 2)
	s.publishN(t, topic, 0, "before", 2)
	now := time.Now()
	end := now.Add(3 * time.Second)
	ctx, cancel := context.WithTimeout(t.Context(), Timeout)
	defer cancel()
	stream, err := s.client.Tail(ctx, &streamv1.TailRequest{
		Topic: topic, Follow: true, EndTime: timestamppb.New(end),
		Start: &streamv1.TailRequest_Position{Position: streamv1.StartPosition_START_POSITION_EARLIEST},
	})
	require.NoError(t, err)
	_, err = stream.Header()
	require.NoError(t, err)
	// Explicit timestamps keep these inside the range however slow the machine is.
	var during []*streamv1.Record
	for i := range 2 {
		r := Record("", "during-"+strconv.Itoa(i))
		r.Timestamp = timestamppb.New(now)
		during = append(during, r)
	}
	s.publish(t, topic, during...)
	late := Record("", "after-end")
	late.Timestamp = timestamppb.New(end.Add(10 * time.Minute))
	s.publish(t, topic, late)
	var got []*streamv1.Message
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err, "the stream must end by itself once end_time has passed")
		got = append(got, resp.GetMessages()...)
	}
	assert.ElementsMatch(t, append(seq("before", 0, 2), seq("during", 0, 2)...), values(got))
}

func testTailPartitions(e env) {
	t, s := e.t, e.s
	topic := s.opts.NewTopic(t, 3)
	s.publishN(t, topic, 0, "p0", 2)
	s.publishN(t, topic, 1, "p1", 2)
	s.publishN(t, topic, 2, "p2", 2)
	msgs, err := Tail(t, s.client, &streamv1.TailRequest{Topic: topic, Partitions: []int32{2, 0}, Start: &streamv1.TailRequest_Position{Position: streamv1.StartPosition_START_POSITION_EARLIEST}})
	require.NoError(t, err)
	assert.ElementsMatch(t, append(seq("p0", 0, 2), seq("p2", 0, 2)...), values(msgs))
}

func testTailInvalid(e env) {
	t, s := e.t, e.s
	topic := s.opts.NewTopic(t, 2)
	earliest := &streamv1.TailRequest_Position{Position: streamv1.StartPosition_START_POSITION_EARLIEST}
	now := time.Now()
	tests := []struct {
		name  string
		req   *streamv1.TailRequest
		field string
	}{
		{"no start", &streamv1.TailRequest{Topic: topic}, "start"},
		{"unspecified position", &streamv1.TailRequest{Topic: topic, Start: &streamv1.TailRequest_Position{}}, "position"},
		{"last_n zero", &streamv1.TailRequest{Topic: topic, Start: &streamv1.TailRequest_LastN{}}, "last_n"},
		{"last_n negative", &streamv1.TailRequest{Topic: topic, Start: &streamv1.TailRequest_LastN{LastN: -4}}, "last_n"},
		{"partition past the last", &streamv1.TailRequest{Topic: topic, Partitions: []int32{0, 2}, Start: earliest}, "partitions[1]"},
		{"end before start", &streamv1.TailRequest{Topic: topic, Start: &streamv1.TailRequest_StartTime{StartTime: timestamppb.New(now)}, EndTime: timestamppb.New(now.Add(-time.Second))}, "end_time"},
		{"bad topic name", &streamv1.TailRequest{Topic: "no/slashes", Start: earliest}, "topic"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Tail(t, s.client, tc.req)
			requireCode(t, err, codes.InvalidArgument, tc.field)
		})
	}
}

func testAckedNotRedelivered(e env) {
	t, s := e.t, e.s
	topic := s.opts.NewTopic(t, 1)
	group := Group(t)
	s.publishN(t, topic, 0, "first", 5)
	a := Subscribe(t, s.client, s.sub(topic, group, streamv1.StartPosition_START_POSITION_EARLIEST))
	msgs := a.Next(t, 5)
	assert.Equal(t, seq("first", 0, 5), values(msgs))
	for _, m := range msgs {
		assert.Equal(t, int32(1), m.GetDeliveryAttempt())
		assert.NotEmpty(t, m.GetAckId())
	}
	a.AckAll(t, msgs)
	a.Close()
	s.publishN(t, topic, 0, "second", 2)
	b := Subscribe(t, s.client, s.sub(topic, group, streamv1.StartPosition_START_POSITION_EARLIEST))
	fresh := b.Next(t, 2)
	assert.Equal(t, seq("second", 0, 2), values(fresh), "acked messages must not come back")
	assert.Equal(t, int32(1), fresh[0].GetDeliveryAttempt())
}

func testUnackedRedelivered(e env) {
	t, s := e.t, e.s
	topic := s.opts.NewTopic(t, 1)
	group := Group(t)
	s.publishN(t, topic, 0, "m", 6)
	a := Subscribe(t, s.client, s.sub(topic, group, streamv1.StartPosition_START_POSITION_EARLIEST))
	msgs := a.Next(t, 6)
	// Ack 0, 1 and 3: only the prefix 0-1 may be committed, so 2 and everything after it return.
	a.Ack(t, msgs[0].GetAckId(), msgs[1].GetAckId(), msgs[3].GetAckId())
	a.Close()
	b := Subscribe(t, s.client, s.sub(topic, group, streamv1.StartPosition_START_POSITION_EARLIEST))
	again := b.Next(t, 4)
	assert.Equal(t, seq("m", 2, 6), values(again))
	assert.Equal(t, msgs[2].GetOffset(), again[0].GetOffset())
	for _, m := range again {
		assert.Equal(t, int32(2), m.GetDeliveryAttempt(), "a message delivered before is on its second attempt")
	}
	b.AckAll(t, again)
}

func testNackRedelivers(e env) {
	t, s := e.t, e.s
	topic := s.opts.NewTopic(t, 1)
	s.publishN(t, topic, 0, "n", 2)
	sb := Subscribe(t, s.client, s.sub(topic, Group(t), streamv1.StartPosition_START_POSITION_EARLIEST))
	first := sb.Next(t, 2)
	assert.Equal(t, int32(1), first[0].GetDeliveryAttempt())
	sb.Nack(t, first[0].GetAckId())
	again := sb.Next(t, 1)[0]
	assert.Equal(t, first[0].GetOffset(), again.GetOffset())
	assert.Equal(t, first[0].GetValue(), again.GetValue())
	assert.Equal(t, int32(2), again.GetDeliveryAttempt())
	assert.NotEqual(t, first[0].GetAckId(), again.GetAckId())
	// The first delivery's id no longer settles the message.
	sb.Ack(t, first[0].GetAckId())
	assert.Equal(t, []string{first[0].GetAckId()}, sb.Ignored(t))
	sb.Nack(t, again.GetAckId())
	third := sb.Next(t, 1)[0]
	assert.Equal(t, int32(3), third.GetDeliveryAttempt())
	sb.Ack(t, third.GetAckId(), first[1].GetAckId())
	sb.None(t, 300*time.Millisecond)
}

func testAttemptsCarryOver(e env) {
	t, s := e.t, e.s
	topic := s.opts.NewTopic(t, 1)
	group := Group(t)
	s.publishN(t, topic, 0, "c", 2)
	a := Subscribe(t, s.client, s.sub(topic, group, streamv1.StartPosition_START_POSITION_EARLIEST))
	msgs := a.Next(t, 2)
	a.Nack(t, msgs[0].GetAckId())
	second := a.Next(t, 1)[0]
	require.Equal(t, int32(2), second.GetDeliveryAttempt())
	a.Close()
	b := Subscribe(t, s.client, s.sub(topic, group, streamv1.StartPosition_START_POSITION_EARLIEST))
	again := b.Next(t, 2)
	assert.Equal(t, seq("c", 0, 2), values(again))
	assert.Equal(t, int32(3), again[0].GetDeliveryAttempt(), "two deliveries before, this is the third")
	assert.Equal(t, int32(2), again[1].GetDeliveryAttempt())
	b.AckAll(t, again)
}

func testFlowMessages(e env) {
	t, s := e.t, e.s
	topic := s.opts.NewTopic(t, 1)
	s.publishN(t, topic, 0, "f", 10)
	sub := s.sub(topic, Group(t), streamv1.StartPosition_START_POSITION_EARLIEST)
	sub.MaxOutstandingMessages = 3
	sb := Subscribe(t, s.client, sub)
	msgs := sb.Next(t, 3)
	assert.Equal(t, seq("f", 0, 3), values(msgs))
	sb.None(t, 500*time.Millisecond)
	sb.Ack(t, msgs[1].GetAckId())
	more := sb.Next(t, 1)
	assert.Equal(t, seq("f", 3, 4), values(more))
	sb.None(t, 300*time.Millisecond)
	// A nack frees no room: the message comes back in its own slot.
	sb.Nack(t, msgs[0].GetAckId())
	back := sb.Next(t, 1)
	assert.Equal(t, "f-0", string(back[0].GetValue()))
	sb.None(t, 300*time.Millisecond)
	sb.Ack(t, back[0].GetAckId(), msgs[2].GetAckId(), more[0].GetAckId())
	rest := sb.Next(t, 3)
	assert.Equal(t, seq("f", 4, 7), values(rest))
}

func testFlowBytes(e env) {
	t, s := e.t, e.s
	topic := s.opts.NewTopic(t, 1)
	payload := make([]byte, 100)
	var recs []*streamv1.Record
	for range 6 {
		recs = append(recs, &streamv1.Record{Value: payload})
	}
	s.publish(t, topic, recs...)
	sub := s.sub(topic, Group(t), streamv1.StartPosition_START_POSITION_EARLIEST)
	sub.MaxOutstandingBytes = 250
	sb := Subscribe(t, s.client, sub)
	msgs := sb.Next(t, 2)
	sb.None(t, 500*time.Millisecond)
	sb.AckAll(t, msgs[:1])
	more := sb.Next(t, 1)
	assert.Equal(t, msgs[1].GetOffset()+1, more[0].GetOffset())
	sb.None(t, 300*time.Millisecond)
}

func testIgnoredAcks(e env) {
	t, s := e.t, e.s
	topic := s.opts.NewTopic(t, 1)
	s.publishN(t, topic, 0, "i", 1)
	sb := Subscribe(t, s.client, s.sub(topic, Group(t), streamv1.StartPosition_START_POSITION_EARLIEST))
	m := sb.Next(t, 1)[0]
	sb.Ack(t, "not-an-ack-id", m.GetAckId())
	assert.Equal(t, []string{"not-an-ack-id"}, sb.Ignored(t))
	sb.Ack(t, m.GetAckId())
	assert.Equal(t, []string{m.GetAckId()}, sb.Ignored(t))
	sb.Nack(t, m.GetAckId())
	assert.Equal(t, []string{m.GetAckId()}, sb.Ignored(t))
}

func testSubscribeInvalid(e env) {
	t, s := e.t, e.s
	topic := s.opts.NewTopic(t, 1)
	tests := []struct {
		name  string
		first *streamv1.SubscribeRequest
		field string
	}{
		{"no subscription", &streamv1.SubscribeRequest{Ack: &streamv1.AckIds{AckIds: []string{"x"}}}, "subscription"},
		{"negative max_outstanding_messages", &streamv1.SubscribeRequest{Subscription: &streamv1.Subscription{Topics: []string{topic}, Group: "g", MaxOutstandingMessages: -1}}, "subscription.max_outstanding_messages"},
		{"negative max_outstanding_bytes", &streamv1.SubscribeRequest{Subscription: &streamv1.Subscription{Topics: []string{topic}, Group: "g", MaxOutstandingBytes: -1}}, "subscription.max_outstanding_bytes"},
		{"bad topic name", &streamv1.SubscribeRequest{Subscription: &streamv1.Subscription{Topics: []string{topic, "a b"}, Group: "g"}}, "subscription.topics[1]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stream, err := s.client.Subscribe(t.Context())
			require.NoError(t, err)
			require.NoError(t, stream.Send(tc.first))
			_, err = stream.Recv()
			requireCode(t, err, codes.InvalidArgument, tc.field)
		})
	}
	t.Run("a second subscription", func(t *testing.T) {
		sb := Subscribe(t, s.client, s.sub(topic, Group(t), streamv1.StartPosition_START_POSITION_EARLIEST))
		require.NoError(t, sb.stream.Send(&streamv1.SubscribeRequest{Subscription: s.sub(topic, "other", 0)}))
		requireCode(t, sb.Err(t), codes.InvalidArgument, "subscription")
	})
}

func testGroupsIndependent(e env) {
	t, s := e.t, e.s
	topic := s.opts.NewTopic(t, 2)
	s.publishN(t, topic, 0, "g", 3)
	s.publishN(t, topic, 1, "h", 3)
	subs := []*Subscriber{
		Subscribe(t, s.client, s.sub(topic, Group(t), streamv1.StartPosition_START_POSITION_EARLIEST)),
		Subscribe(t, s.client, s.sub(topic, Group(t), streamv1.StartPosition_START_POSITION_EARLIEST)),
	}
	results := make([][]string, 2)
	for i, sb := range subs {
		msgs := sb.Next(t, 6)
		sb.AckAll(t, msgs)
		results[i] = values(msgs)
	}
	want := append(seq("g", 0, 3), seq("h", 0, 3)...)
	assert.ElementsMatch(t, want, results[0])
	assert.ElementsMatch(t, want, results[1])
}

func testSeveralTopics(e env) {
	t, s := e.t, e.s
	first, second := s.opts.NewTopic(t, 1), s.opts.NewTopic(t, 2)
	s.publishN(t, first, 0, "one", 2)
	s.publishN(t, second, 1, "two", 2)
	sb := Subscribe(t, s.client, &streamv1.Subscription{Topics: []string{first, second}, Group: Group(t), Start: streamv1.StartPosition_START_POSITION_EARLIEST})
	msgs := sb.Next(t, 4)
	assert.ElementsMatch(t, append(seq("one", 0, 2), seq("two", 0, 2)...), values(msgs))
	for _, m := range msgs {
		want := map[string]string{"one": first, "two": second}[string(m.GetValue())[:3]]
		assert.Equal(t, want, m.GetTopic())
	}
	// Ack ids name their topic: acking all of them leaves nothing to ignore or redeliver.
	sb.AckAll(t, msgs)
	sb.Nack(t, msgs[0].GetAckId())
	assert.Equal(t, []string{msgs[0].GetAckId()}, sb.Ignored(t))
}

// String helps failure messages print messages compactly.
func String(m *streamv1.Message) string {
	return fmt.Sprintf("%s/%d@%d attempt %d %q", m.GetTopic(), m.GetPartition(), m.GetOffset(), m.GetDeliveryAttempt(), m.GetValue())
}
