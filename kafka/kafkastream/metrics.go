package kafkastream

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the plugin's own Prometheus collectors, next to core's per-method ones.
type metrics struct {
	produceLatency *prometheus.HistogramVec
	produceBytes   prometheus.Counter
	produceRecords *prometheus.CounterVec
	outstanding    *prometheus.GaugeVec
	lag            *prometheus.GaugeVec
	rebalances     *prometheus.CounterVec
	redeliveries   *prometheus.CounterVec
	deadLettered   *prometheus.CounterVec
	delivered      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		produceLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "prism_kafka_produce_latency_seconds",
			Help:    "Time from handing a request's records to the producer until the brokers acknowledged all of them.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"method"}),
		produceBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "prism_kafka_produce_bytes_total",
			Help: "Key, value and header bytes of records the brokers acknowledged.",
		}),
		produceRecords: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "prism_kafka_produce_records_total",
			Help: "Records handed to the producer, by result (ok or error).",
		}, []string{"result"}),
		outstanding: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "prism_kafka_subscribe_outstanding_messages",
			Help: "Messages sent on a Subscribe stream and not yet acked or nacked, per stream.",
		}, []string{"group", "stream"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "prism_kafka_consumer_lag",
			Help: "Records between a group's committed offset and the partition's high watermark, for partitions this plugin serves.",
		}, []string{"group", "topic", "partition"}),
		rebalances: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "prism_kafka_rebalances_total",
			Help: "Partition assignment changes seen by Subscribe streams, by group and event (assigned, revoked, lost).",
		}, []string{"group", "event"}),
		redeliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "prism_kafka_redeliveries_total",
			Help: "Messages delivered again after a nack, by group.",
		}, []string{"group"}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "prism_kafka_dead_lettered_total",
			Help: "Messages moved to the dead-letter topic, by group.",
		}, []string{"group"}),
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "prism_kafka_delivered_messages_total",
			Help: "Messages sent to clients, by method (Subscribe or Tail).",
		}, []string{"method"}),
	}
	for _, c := range []prometheus.Collector{m.produceLatency, m.produceBytes, m.produceRecords, m.outstanding, m.lag, m.rebalances, m.redeliveries, m.deadLettered, m.delivered} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register kafka metrics: %w", err)
		}
	}
	return m, nil
}
