package kafkastream_test

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	streamv1 "github.com/prism-gateway/plugins/gen/prism/stream/v1"
	"github.com/prism-gateway/plugins/internal/testsvc"
)

// TestTailReadsAsManyRecordsAsADirectConsumer reads a filled topic from its start through Tail and
// with a plain franz-go consumer, checks both see every record once, and logs both rates (the
// plugin and the client share this process, so the figures are for comparing, not asserting).
func TestTailReadsAsManyRecordsAsADirectConsumer(t *testing.T) {
	const n = 50_000
	adm, cl := admin(t)
	topic := newTopic(t, adm, 1)
	value := make([]byte, 1024)
	_, _ = rand.Read(value)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	recs := make([]*kgo.Record, n)
	for i := range recs {
		recs[i] = &kgo.Record{Topic: topic, Value: value}
	}
	require.NoError(t, cl.ProduceSync(ctx, recs...).FirstErr())

	c := client(startPlugin(t, ""))
	var first time.Duration // until the first Tail response
	viaTail := func() time.Duration {
		first = 0
		start := time.Now()
		stream, err := c.Tail(ctx, &streamv1.TailRequest{Topic: topic, Start: &streamv1.TailRequest_Position{Position: streamv1.StartPosition_START_POSITION_EARLIEST}})
		require.NoError(t, err)
		next := int64(0)
		for {
			resp, err := stream.Recv()
			if next == 0 && first == 0 {
				first = time.Since(start)
			}
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err)
			for _, m := range resp.GetMessages() {
				require.Equal(t, next, m.GetOffset())
				next++
			}
		}
		require.EqualValues(t, n, next)
		return time.Since(start)
	}
	direct := func() time.Duration {
		start := time.Now()
		dc, err := kgo.NewClient(kgo.SeedBrokers(testsvc.KafkaBrokers(t)...),
			kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().AtStart()}}))
		require.NoError(t, err)
		defer dc.Close()
		got := 0
		for got < n {
			f := dc.PollFetches(ctx)
			require.NoError(t, f.Err0())
			got += f.NumRecords()
		}
		require.Equal(t, n, got)
		return time.Since(start)
	}
	rate := func(d time.Duration) float64 { return n / d.Seconds() }
	// Alternating rounds, and the median ratio, keep a busy machine's swings out of the figure.
	var ratios []float64
	for round := range 3 {
		d, p := direct(), viaTail()
		ratios = append(ratios, d.Seconds()/p.Seconds())
		t.Logf("round %d: %d × 1 KiB records: direct %.0f records/s, Tail %.0f records/s, Tail÷direct %.2fx (Tail's first response after %s)",
			round, n, rate(d), rate(p), ratios[round], first)
	}
	slices.Sort(ratios)
	t.Logf("Tail÷direct median %.2fx (range %.2f–%.2fx)", ratios[len(ratios)/2], ratios[0], ratios[len(ratios)-1])
}
