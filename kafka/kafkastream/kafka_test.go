package kafkastream_test

import (
	"context"
	"crypto/rand"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/prism-gateway/plugins/conformance/streamtest"
	"github.com/prism-gateway/plugins/core/coretest"
	streamv1 "github.com/prism-gateway/plugins/gen/prism/stream/v1"
	"github.com/prism-gateway/plugins/internal/testsvc"
	"github.com/prism-gateway/plugins/kafka/kafkastream"
)

func earliest(topic, group string) *streamv1.Subscription {
	return &streamv1.Subscription{Topics: []string{topic}, Group: group, Start: streamv1.StartPosition_START_POSITION_EARLIEST}
}

func publishValues(t *testing.T, c streamv1.StreamServiceClient, topic string, partition int32, values ...string) {
	t.Helper()
	recs := make([]*streamv1.Record, len(values))
	for i, v := range values {
		recs[i] = &streamv1.Record{Value: []byte(v), Partition: &partition}
	}
	_, err := c.Publish(t.Context(), &streamv1.PublishRequest{Topic: topic, Records: recs})
	require.NoError(t, err)
}

func valuesOf(msgs []*streamv1.Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = string(m.GetValue())
	}
	return out
}

func TestSASLMechanisms(t *testing.T) {
	brokers := testsvc.KafkaSASLBrokers(t)
	adm, _ := admin(t)
	for _, mech := range []string{"", kafkastream.MechanismScramSHA256, kafkastream.MechanismPlain} {
		name := mech
		if name == "" {
			name = "SCRAM-SHA-512 (the default with a username)"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{
				"KAFKA_BROKERS":       strings.Join(brokers, ","),
				"KAFKA_SASL_USERNAME": testsvc.User,
				"KAFKA_SASL_PASSWORD": testsvc.Password,
			}
			if mech != "" {
				env["PRISM_BACKEND_SASL_MECHANISM"] = mech
			}
			r := coretest.Start(t, kafkastream.New(), coretest.Options{YAML: "backend:\n" + groupTimings, Env: env})
			r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 30*time.Second)
			c := client(r)
			topic := newTopic(t, adm, 1)
			publishValues(t, c, topic, 0, "a", "b")
			msgs, err := streamtest.Tail(t, c, &streamv1.TailRequest{Topic: topic, Start: &streamv1.TailRequest_Position{Position: streamv1.StartPosition_START_POSITION_EARLIEST}})
			require.NoError(t, err)
			assert.Equal(t, []string{"a", "b"}, valuesOf(msgs))
			sb := streamtest.Subscribe(t, c, earliest(topic, streamtest.Group(t)))
			got := sb.Next(t, 2)
			assert.Equal(t, []string{"a", "b"}, valuesOf(got))
			sb.AckAll(t, got)
		})
	}
	t.Run("a wrong password is not serving and never logged", func(t *testing.T) {
		t.Parallel()
		const wrong = "not-the-password-3f9a"
		r := coretest.Start(t, kafkastream.New(), coretest.Options{YAML: "backend:\n" + groupTimings, Env: map[string]string{
			"KAFKA_BROKERS":       strings.Join(brokers, ","),
			"KAFKA_SASL_USERNAME": testsvc.User,
			"KAFKA_SASL_PASSWORD": wrong,
		}})
		r.WaitHealth(t, "", healthpb.HealthCheckResponse_NOT_SERVING, 30*time.Second)
		_, err := client(r).Publish(t.Context(), &streamv1.PublishRequest{Topic: "prism-any", Records: []*streamv1.Record{{Value: []byte("x")}}})
		require.Error(t, err)
		assert.NotContains(t, err.Error(), wrong)
		assert.NotContains(t, r.Logs.String(), wrong)
	})
}

func TestInteropWithPlainClients(t *testing.T) {
	r := startPlugin(t, "")
	c := client(r)
	adm, raw := admin(t)
	ts := time.UnixMilli(time.Now().Add(-10 * time.Minute).UnixMilli())

	t.Run("records published through the plugin read intact by a plain consumer", func(t *testing.T) {
		topic := newTopic(t, adm, 1)
		_, err := c.Publish(t.Context(), &streamv1.PublishRequest{Topic: topic, Records: []*streamv1.Record{{
			Key: []byte("k1"), Value: []byte("v1"), Timestamp: timestamppb.New(ts),
			Headers: []*streamv1.Header{{Key: "trace", Value: []byte("abc")}, {Key: "trace", Value: []byte("def")}},
		}}})
		require.NoError(t, err)
		cons, err := kgo.NewClient(kgo.SeedBrokers(testsvc.KafkaBrokers(t)...), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))
		require.NoError(t, err)
		defer cons.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		var recs []*kgo.Record
		for len(recs) == 0 {
			f := cons.PollFetches(ctx)
			require.NoError(t, f.Err())
			recs = append(recs, f.Records()...)
		}
		rec := recs[0]
		assert.Equal(t, "k1", string(rec.Key))
		assert.Equal(t, "v1", string(rec.Value))
		assert.True(t, ts.Equal(rec.Timestamp), "timestamp %s, want %s", rec.Timestamp, ts)
		require.Len(t, rec.Headers, 2)
		assert.Equal(t, kgo.RecordHeader{Key: "trace", Value: []byte("abc")}, rec.Headers[0])
		assert.Equal(t, kgo.RecordHeader{Key: "trace", Value: []byte("def")}, rec.Headers[1])
	})

	t.Run("records from a plain producer come out of Subscribe and Tail intact", func(t *testing.T) {
		topic := newTopic(t, adm, 2)
		var sent []*kgo.Record
		for i := range 4 {
			sent = append(sent, &kgo.Record{
				Topic: topic, Key: []byte("key-" + strconv.Itoa(i)), Value: []byte("value-" + strconv.Itoa(i)),
				Timestamp: ts.Add(time.Duration(i) * time.Millisecond),
				Headers:   []kgo.RecordHeader{{Key: "n", Value: []byte(strconv.Itoa(i))}, {Key: "empty"}},
			})
		}
		require.NoError(t, raw.ProduceSync(t.Context(), sent...).FirstErr())
		check := func(t *testing.T, msgs []*streamv1.Message) {
			t.Helper()
			require.Len(t, msgs, len(sent))
			byKey := map[string]*streamv1.Message{}
			for _, m := range msgs {
				byKey[string(m.GetKey())] = m
			}
			for _, s := range sent {
				m := byKey[string(s.Key)]
				require.NotNil(t, m, "key %s", s.Key)
				assert.Equal(t, s.Value, m.GetValue())
				assert.Equal(t, s.Partition, m.GetPartition())
				assert.Equal(t, s.Offset, m.GetOffset())
				assert.True(t, s.Timestamp.Equal(m.GetTimestamp().AsTime()))
				require.Len(t, m.GetHeaders(), 2)
				assert.Equal(t, "n", m.GetHeaders()[0].GetKey())
				assert.Equal(t, s.Headers[0].Value, m.GetHeaders()[0].GetValue())
				assert.Equal(t, "empty", m.GetHeaders()[1].GetKey())
				assert.Empty(t, m.GetHeaders()[1].GetValue())
			}
		}
		msgs, err := streamtest.Tail(t, c, &streamv1.TailRequest{Topic: topic, Start: &streamv1.TailRequest_Position{Position: streamv1.StartPosition_START_POSITION_EARLIEST}})
		require.NoError(t, err)
		check(t, msgs)
		sb := streamtest.Subscribe(t, c, earliest(topic, streamtest.Group(t)))
		msgs = sb.Next(t, len(sent))
		check(t, msgs)
		sb.AckAll(t, msgs)
	})
}

func TestAcksSurvivePluginRestart(t *testing.T) {
	adm, _ := admin(t)
	topic := newTopic(t, adm, 1)
	group := streamtest.Group(t)

	first := startPlugin(t, "")
	publishValues(t, client(first), topic, 0, "m0", "m1", "m2", "m3", "m4", "m5")
	a := streamtest.Subscribe(t, client(first), earliest(topic, group))
	msgs := a.Next(t, 6)
	a.AckAll(t, msgs[:3])
	a.Ack(t, msgs[4].GetAckId()) // after the gap: must not be committed
	waitCommitted(t, adm, group, topic, 0, 3)
	tail, err := client(first).Tail(t.Context(), &streamv1.TailRequest{Topic: topic, Follow: true, Start: &streamv1.TailRequest_Position{Position: streamv1.StartPosition_START_POSITION_LATEST}})
	require.NoError(t, err)
	_, err = tail.Header()
	require.NoError(t, err)
	// Stopping the plugin with the streams open drains them: they end with UNAVAILABLE so clients
	// move to another replica, and the acked prefix is committed on the way out.
	require.NoError(t, first.Stop())
	assert.Equal(t, codes.Unavailable, status.Code(a.Err(t)))
	_, err = tail.Recv()
	assert.Equal(t, codes.Unavailable, status.Code(err), "%v", err)

	second := startPlugin(t, "")
	b := streamtest.Subscribe(t, client(second), earliest(topic, group))
	again := b.Next(t, 3)
	assert.Equal(t, []string{"m3", "m4", "m5"}, valuesOf(again), "unacked messages come back; acked ones never do")
	for _, m := range again {
		assert.Equal(t, int32(2), m.GetDeliveryAttempt(), "offset %d", m.GetOffset())
	}
	b.AckAll(t, again)
	b.Close()
	require.NoError(t, second.Stop())

	third := startPlugin(t, "")
	publishValues(t, client(third), topic, 0, "m6")
	c := streamtest.Subscribe(t, client(third), earliest(topic, group))
	assert.Equal(t, []string{"m6"}, valuesOf(c.Next(t, 1)))
}

// waitCommitted waits until the group's committed offset for the partition is want.
func waitCommitted(t *testing.T, adm *kadm.Client, group, topic string, partition int32, want int64) {
	t.Helper()
	require.Eventually(t, func() bool {
		offsets, err := adm.FetchOffsets(t.Context(), group)
		if err != nil {
			return false
		}
		o, ok := offsets.Lookup(topic, partition)
		return ok && o.At == want
	}, 20*time.Second, 20*time.Millisecond, "group %s never committed offset %d of %s/%d", group, want, topic, partition)
}

// waitAssignment waits until the group is stable with members members that together own all
// partitions of topic, each owning at least one.
func waitAssignment(t *testing.T, adm *kadm.Client, group, topic string, members, partitions int) {
	t.Helper()
	require.Eventually(t, func() bool {
		described, err := adm.DescribeGroups(t.Context(), group)
		if err != nil {
			return false
		}
		g := described[group]
		if g.Err != nil || g.State != "Stable" || len(g.Members) != members {
			return false
		}
		total := 0
		for _, m := range g.Members {
			assigned, ok := m.Assigned.AsConsumer()
			if !ok {
				return false
			}
			n := 0
			for _, at := range assigned.Topics {
				if at.Topic == topic {
					n += len(at.Partitions)
				}
			}
			if n == 0 {
				return false
			}
			total += n
		}
		return total == partitions
	}, 30*time.Second, 50*time.Millisecond, "group %s did not settle on %d members", group, members)
}

func TestTwoSubscribersSplitPartitions(t *testing.T) {
	r := startPlugin(t, "")
	c := client(r)
	adm, _ := admin(t)
	topic := newTopic(t, adm, 4)
	group := streamtest.Group(t)
	a := streamtest.Subscribe(t, c, earliest(topic, group))
	waitAssignment(t, adm, group, topic, 1, 4)
	b := streamtest.Subscribe(t, c, earliest(topic, group))
	waitAssignment(t, adm, group, topic, 2, 4)

	const total = 40
	for p := range int32(4) {
		var vals []string
		for i := range total / 4 {
			vals = append(vals, "p"+strconv.Itoa(int(p))+"-"+strconv.Itoa(i))
		}
		publishValues(t, c, topic, p, vals...)
	}
	seen := map[string]int{}
	owner := map[int32]string{}
	got := map[string]int{}
	deadline := time.After(streamtest.Timeout)
	for len(seen) < total {
		var m *streamv1.Message
		var who string
		var sb *streamtest.Subscriber
		select {
		case m = <-a.Messages():
			who, sb = "a", a
		case m = <-b.Messages():
			who, sb = "b", b
		case <-deadline:
			require.FailNow(t, "timed out", "saw %d of %d messages", len(seen), total)
		}
		seen[string(m.GetValue())]++
		got[who]++
		if prev, ok := owner[m.GetPartition()]; ok {
			assert.Equal(t, prev, who, "partition %d went to both subscribers", m.GetPartition())
		}
		owner[m.GetPartition()] = who
		sb.Ack(t, m.GetAckId())
	}
	a.None(t, 300*time.Millisecond)
	b.None(t, 100*time.Millisecond)
	for v, n := range seen {
		assert.Equal(t, 1, n, "message %s delivered %d times", v, n)
	}
	assert.Positive(t, got["a"])
	assert.Positive(t, got["b"])
}

func TestRevokedPartitionsIgnoreAcks(t *testing.T) {
	r := startPlugin(t, "")
	c := client(r)
	adm, _ := admin(t)
	topic := newTopic(t, adm, 2)
	group := streamtest.Group(t)
	publishValues(t, c, topic, 0, "p0-a", "p0-b")
	publishValues(t, c, topic, 1, "p1-a", "p1-b")
	a := streamtest.Subscribe(t, c, earliest(topic, group))
	held := a.Next(t, 4)

	b := streamtest.Subscribe(t, c, earliest(topic, group))
	moved := b.Next(t, 2) // B only gets them once A gave up their partition
	require.Equal(t, moved[0].GetPartition(), moved[1].GetPartition())
	lost := moved[0].GetPartition()
	assert.Equal(t, int32(2), moved[0].GetDeliveryAttempt(), "A delivered it once already")

	a.AckAll(t, held)
	var wantIgnored []string
	for _, m := range held {
		if m.GetPartition() == lost {
			wantIgnored = append(wantIgnored, m.GetAckId())
		}
	}
	assert.ElementsMatch(t, wantIgnored, a.Ignored(t))
	b.AckAll(t, moved)
	a.None(t, 300*time.Millisecond)
}

func TestDeadLetter(t *testing.T) {
	r := startPlugin(t, "  max_delivery_attempts: 2\n  dead_letter_topic: \"{topic}.dlq\"\n")
	c := client(r)
	adm, _ := admin(t)
	topic := newTopic(t, adm, 1)
	createTopic(t, adm, topic+".dlq", 1)
	group := streamtest.Group(t)
	_, err := c.Publish(t.Context(), &streamv1.PublishRequest{Topic: topic, Records: []*streamv1.Record{
		{Key: []byte("bad"), Value: []byte("poison"), Headers: []*streamv1.Header{{Key: "origin", Value: []byte("test")}}},
		{Value: []byte("fine")},
	}})
	require.NoError(t, err)

	sb := streamtest.Subscribe(t, c, earliest(topic, group))
	msgs := sb.Next(t, 2)
	sb.Ack(t, msgs[1].GetAckId())
	sb.Nack(t, msgs[0].GetAckId())
	second := sb.Next(t, 1)[0]
	assert.Equal(t, int32(2), second.GetDeliveryAttempt())
	sb.Nack(t, second.GetAckId())

	ctx, cancel := context.WithTimeout(t.Context(), streamtest.Timeout)
	defer cancel()
	tail, err := c.Tail(ctx, &streamv1.TailRequest{Topic: topic + ".dlq", Follow: true, Start: &streamv1.TailRequest_Position{Position: streamv1.StartPosition_START_POSITION_EARLIEST}})
	require.NoError(t, err)
	resp, err := tail.Recv()
	require.NoError(t, err)
	dead := resp.GetMessages()[0]
	assert.Equal(t, "bad", string(dead.GetKey()))
	assert.Equal(t, "poison", string(dead.GetValue()))
	headers := map[string]string{}
	for _, h := range dead.GetHeaders() {
		headers[h.GetKey()] = string(h.GetValue())
	}
	assert.Equal(t, map[string]string{
		"origin":                       "test",
		kafkastream.HeaderDLQTopic:     topic,
		kafkastream.HeaderDLQPartition: "0",
		kafkastream.HeaderDLQOffset:    strconv.FormatInt(msgs[0].GetOffset(), 10),
		kafkastream.HeaderDLQGroup:     group,
		kafkastream.HeaderDLQAttempts:  "2",
	}, headers)
	sb.None(t, 300*time.Millisecond)

	// The dead-lettered message counts as settled: the group commits past it.
	waitCommitted(t, adm, group, topic, 0, 2)
}

func TestTopicRules(t *testing.T) {
	adm, _ := admin(t)
	t.Run("topics outside the allow-list are refused", func(t *testing.T) {
		topic := newTopic(t, adm, 1)
		r := startPlugin(t, "  topics: [\"allowed-*\"]\n")
		_, err := client(r).Publish(t.Context(), &streamv1.PublishRequest{Topic: topic, Records: []*streamv1.Record{{Value: []byte("x")}}})
		assert.Equal(t, codes.PermissionDenied, status.Code(err), "%v", err)
	})
	t.Run("unknown topics are created when auto_create_topics is on", func(t *testing.T) {
		r := startPlugin(t, "  auto_create_topics: true\n  topic_partitions: 2\n")
		name := uniqueName("prism-auto-")
		t.Cleanup(func() { _, _ = adm.DeleteTopics(context.Background(), name) })
		resp, err := client(r).Publish(t.Context(), &streamv1.PublishRequest{Topic: name, Records: []*streamv1.Record{{Value: []byte("x")}}})
		require.NoError(t, err)
		assert.Len(t, resp.GetAcks(), 1)
		details, err := adm.ListTopics(t.Context(), name)
		require.NoError(t, err)
		assert.Len(t, details[name].Partitions, 2)
	})
	t.Run("empty topic and group use the configured defaults", func(t *testing.T) {
		topic := newTopic(t, adm, 1)
		group := streamtest.Group(t)
		r := coretest.Start(t, kafkastream.New(), coretest.Options{YAML: "backend:\n" + groupTimings, Env: map[string]string{
			"KAFKA_BROKERS":                   strings.Join(testsvc.KafkaBrokers(t), ","),
			"KAFKA_TOPIC":                     topic,
			"PRISM_BACKEND_CONSUMER_GROUP":    group,
			"PRISM_BACKEND_AUTO_OFFSET_RESET": "earliest",
		}})
		c := client(r)
		_, err := c.Publish(t.Context(), &streamv1.PublishRequest{Records: []*streamv1.Record{{Value: []byte("default")}}})
		require.NoError(t, err)
		msgs, err := streamtest.Tail(t, c, &streamv1.TailRequest{Start: &streamv1.TailRequest_LastN{LastN: 1}})
		require.NoError(t, err)
		assert.Equal(t, []string{"default"}, valuesOf(msgs))
		sb := streamtest.Subscribe(t, c, &streamv1.Subscription{})
		got := sb.Next(t, 1)
		assert.Equal(t, []string{"default"}, valuesOf(got))
		sb.AckAll(t, got)
		sb.Close()
		offsets, err := adm.FetchOffsets(t.Context(), group)
		require.NoError(t, err)
		o, ok := offsets.Lookup(topic, 0)
		assert.True(t, ok && o.At == 1, "committed in the default group: %+v", o)
	})
}

func TestMetrics(t *testing.T) {
	r := startPlugin(t, "")
	c := client(r)
	adm, _ := admin(t)
	topic := newTopic(t, adm, 1)
	group := streamtest.Group(t)
	publishValues(t, c, topic, 0, "a", "b")
	sb := streamtest.Subscribe(t, c, earliest(topic, group))
	msgs := sb.Next(t, 2)
	sb.Ack(t, msgs[0].GetAckId())

	var body string
	require.Eventually(t, func() bool {
		resp, err := http.Get(r.MetricsURL + "/metrics")
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		body = string(b)
		return strings.Contains(body, `prism_kafka_consumer_lag{group="`+group+`",partition="0",topic="`+topic+`"} 1`)
	}, 20*time.Second, 50*time.Millisecond, "lag of 1 (one message unacked) not reported")
	for _, want := range []string{
		`prism_kafka_produce_latency_seconds_count{method="Publish"} 1`,
		`prism_kafka_produce_bytes_total 2`,
		`prism_kafka_produce_records_total{result="ok"} 2`,
		`prism_kafka_subscribe_outstanding_messages{group="` + group + `",stream="1"} 1`,
		// Counts that a slow machine could raise with an extra rejoin are only checked for presence.
		`prism_kafka_rebalances_total{event="assigned",group="` + group + `"} `,
		`prism_kafka_delivered_messages_total{method="Subscribe"} `,
	} {
		assert.Contains(t, body, want)
	}
}

func TestLimitsReloadLive(t *testing.T) {
	brokers := strings.Join(testsvc.KafkaBrokers(t), ", ")
	// batch_max_bytes above the brokers' message.max.bytes lets the limits below reach the brokers.
	base := "backend:\n  brokers: [" + brokers + "]\n  batch_max_bytes: 4000000\n" + groupTimings
	r := coretest.Start(t, kafkastream.New(), coretest.Options{YAML: base + "limits:\n  max_records_per_publish: 2\n"})
	c := client(r)
	adm, _ := admin(t)
	topic := newTopic(t, adm, 1)
	three := []*streamv1.Record{{Value: []byte("a")}, {Value: []byte("b")}, {Value: []byte("c")}}
	_, err := c.Publish(t.Context(), &streamv1.PublishRequest{Topic: topic, Records: three})
	require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	assert.Contains(t, err.Error(), "limits.max_records_per_publish")

	r.WriteConfig(t, base+"limits:\n  max_records_per_publish: 3\n  max_value_bytes: 2000000\n  not_a_key: 1\n")
	_, err = r.Server.Reload(t.Context())
	require.Error(t, err, "an unknown key rejects the reload")
	r.WriteConfig(t, base+"limits:\n  max_records_per_publish: 3\n  max_value_bytes: 2000000\n  max_publish_bytes: 4000000\n")
	res, err := r.Server.Reload(t.Context())
	require.NoError(t, err)
	assert.Contains(t, res.Changed, "limits.max_records_per_publish")
	_, err = c.Publish(t.Context(), &streamv1.PublishRequest{Topic: topic, Records: three})
	require.NoError(t, err)

	// The limits now let a 1.5 MB value through, but the brokers refuse such a record: that is
	// still the caller's problem, not an outage.
	// Random bytes, so that compression cannot shrink the batch under message.max.bytes.
	big := make([]byte, 1_500_000)
	_, _ = rand.Read(big)
	_, err = c.Publish(t.Context(), &streamv1.PublishRequest{Topic: topic, Records: []*streamv1.Record{{Value: big}}})
	require.Equal(t, codes.InvalidArgument, status.Code(err), "%v", err)
	assert.Contains(t, err.Error(), "records[0]")
}

func TestAckDeadlineRedelivers(t *testing.T) {
	// 1s, not less: the quick message's ack must arrive within it even on a loaded CI machine.
	r := startPlugin(t, "  ack_deadline: 1s\n  max_delivery_attempts: 3\n")
	c := client(r)
	adm, _ := admin(t)
	topic := newTopic(t, adm, 1)
	createTopic(t, adm, topic+".dlq", 1)
	publishValues(t, c, topic, 0, "slow", "quick")
	group := streamtest.Group(t)
	sb := streamtest.Subscribe(t, c, earliest(topic, group))
	first := sb.Next(t, 2)
	sb.Ack(t, first[1].GetAckId())
	again := sb.Next(t, 1)[0]
	assert.Equal(t, "slow", string(again.GetValue()))
	assert.Equal(t, int32(2), again.GetDeliveryAttempt())
	third := sb.Next(t, 1)[0]
	assert.Equal(t, int32(3), third.GetDeliveryAttempt())
	// The third attempt expires too: the message goes to the dead-letter topic and the group
	// moves past it.
	waitCommitted(t, adm, group, topic, 0, 2)
	sb.Ack(t, first[0].GetAckId())
	assert.Equal(t, []string{first[0].GetAckId()}, sb.Ignored(t))
}
