package rediscache

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
)

// op names a cache operation in the latency and error metrics.
type op int

const (
	opGet op = iota
	opSet
	opDelete
	opMGet
	opMSet
	opExpire
	opCount
)

var opNames = [opCount]string{"get", "set", "delete", "mget", "mset", "expire"}

// maxNamespaceLabels bounds the namespace label of the hit and miss counters: namespaces are
// client-chosen, so after this many distinct ones the rest are counted under otherNamespace.
const maxNamespaceLabels = 256

// otherNamespace cannot collide with a real namespace, which must start with a letter.
const otherNamespace = "_other"

// metrics are the plugin's own Prometheus metrics.
type metrics struct {
	hits     *prometheus.CounterVec
	misses   *prometheus.CounterVec
	duration [opCount]prometheus.Observer
	errors   [opCount]prometheus.Counter

	namespaces sync.Map // namespace -> *nsCounters
	nsCount    atomic.Int64
}

// nsCounters are one namespace's resolved counters, so the hot path skips label hashing.
type nsCounters struct {
	hits, misses prometheus.Counter
}

// durationBuckets span a loopback Redis round trip (tens of µs) to a slow cluster call.
var durationBuckets = prometheus.ExponentialBucketsRange(20e-6, 5, 18)

func newMetrics() (*metrics, []prometheus.Collector) {
	m := &metrics{
		hits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "prism_cache_hits_total",
			Help: "Keys found by Get and MGet, by namespace (namespaces past the first 256 count as _other).",
		}, []string{"namespace"}),
		misses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "prism_cache_misses_total",
			Help: "Keys not found by Get and MGet, by namespace (namespaces past the first 256 count as _other).",
		}, []string{"namespace"}),
	}
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "prism_redis_command_duration_seconds",
		Help:    "Time spent in Redis for one cache operation (all its commands and pipelines), by operation.",
		Buckets: durationBuckets,
	}, []string{"operation"})
	errs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "prism_redis_command_errors_total",
		Help: "Cache operations that Redis failed (not counting misses or unmet conditions), by operation.",
	}, []string{"operation"})
	for i, name := range opNames {
		m.duration[i] = duration.WithLabelValues(name)
		m.errors[i] = errs.WithLabelValues(name)
	}
	return m, []prometheus.Collector{m.hits, m.misses, duration, errs}
}

// observe records one backend operation that started at start.
func (m *metrics) observe(o op, start time.Time, err error) {
	m.duration[o].Observe(time.Since(start).Seconds())
	if err != nil && !errors.Is(err, redis.Nil) {
		m.errors[o].Inc()
	}
}

// lookups counts hits and misses of one namespace.
func (m *metrics) lookups(namespace string, hits, misses int) {
	c := m.counters(namespace)
	if hits > 0 {
		c.hits.Add(float64(hits))
	}
	if misses > 0 {
		c.misses.Add(float64(misses))
	}
}

func (m *metrics) counters(namespace string) *nsCounters {
	if c, ok := m.namespaces.Load(namespace); ok {
		return c.(*nsCounters)
	}
	label := namespace
	if m.nsCount.Add(1) > maxNamespaceLabels {
		m.nsCount.Add(-1)
		label = otherNamespace
	}
	c := &nsCounters{hits: m.hits.WithLabelValues(label), misses: m.misses.WithLabelValues(label)}
	if label == otherNamespace {
		return c
	}
	if prev, loaded := m.namespaces.LoadOrStore(namespace, c); loaded {
		m.nsCount.Add(-1)
		return prev.(*nsCounters)
	}
	return c
}

// poolCollector exports go-redis connection pool statistics at scrape time.
type poolCollector struct {
	stats func() *redis.PoolStats

	hits, misses, timeouts, total, idle, stale *prometheus.Desc
}

func newPoolCollector(stats func() *redis.PoolStats) *poolCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, nil, nil)
	}
	return &poolCollector{
		stats:    stats,
		hits:     d("prism_redis_pool_hits_total", "Times a free connection was found in the pool."),
		misses:   d("prism_redis_pool_misses_total", "Times no free connection was in the pool and one was dialled or waited for."),
		timeouts: d("prism_redis_pool_timeouts_total", "Times waiting for a pooled connection timed out."),
		total:    d("prism_redis_pool_connections", "Connections in the pool (all nodes in cluster mode)."),
		idle:     d("prism_redis_pool_idle_connections", "Idle connections in the pool."),
		stale:    d("prism_redis_pool_stale_connections_total", "Connections removed from the pool as stale."),
	}
}

// Describe implements prometheus.Collector.
func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.hits, c.misses, c.timeouts, c.total, c.idle, c.stale} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	if s == nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(c.hits, prometheus.CounterValue, float64(s.Hits))
	ch <- prometheus.MustNewConstMetric(c.misses, prometheus.CounterValue, float64(s.Misses))
	ch <- prometheus.MustNewConstMetric(c.timeouts, prometheus.CounterValue, float64(s.Timeouts))
	ch <- prometheus.MustNewConstMetric(c.total, prometheus.GaugeValue, float64(s.TotalConns))
	ch <- prometheus.MustNewConstMetric(c.idle, prometheus.GaugeValue, float64(s.IdleConns))
	ch <- prometheus.MustNewConstMetric(c.stale, prometheus.CounterValue, float64(s.StaleConns))
}
