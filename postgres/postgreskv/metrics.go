package postgreskv

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// poolCollector exports the pgx pool's statistics at scrape time.
type poolCollector struct {
	plugin                                   *Plugin
	acquired, idle, total, max, constructing *prometheus.Desc
	acquires, waits, waitSeconds             *prometheus.Desc
}

func newPoolCollector(p *Plugin) *poolCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("prism_postgres_pool_"+name, help, nil, nil)
	}
	return &poolCollector{
		plugin:       p,
		acquired:     d("acquired_connections", "Connections currently in use by a call."),
		idle:         d("idle_connections", "Open connections waiting for a call."),
		total:        d("total_connections", "Open connections (acquired, idle and being opened)."),
		max:          d("max_connections", "Largest number of connections the pool opens (backend.pool_size)."),
		constructing: d("constructing_connections", "Connections being opened."),
		acquires:     d("acquires_total", "Connections handed to calls."),
		waits:        d("empty_acquires_total", "Acquires that had to wait because no connection was idle."),
		waitSeconds:  d("acquire_wait_seconds_total", "Time calls spent waiting for a connection."),
	}
}

// Describe implements prometheus.Collector.
func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.acquired, c.idle, c.total, c.max, c.constructing, c.acquires, c.waits, c.waitSeconds} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	pool := c.plugin.currentPool()
	if pool == nil {
		return
	}
	st := pool.Stat()
	g := func(d *prometheus.Desc, v float64) { ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v) }
	k := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	g(c.acquired, float64(st.AcquiredConns()))
	g(c.idle, float64(st.IdleConns()))
	g(c.total, float64(st.TotalConns()))
	g(c.max, float64(st.MaxConns()))
	g(c.constructing, float64(st.ConstructingConns()))
	k(c.acquires, float64(st.AcquireCount()))
	k(c.waits, float64(st.EmptyAcquireCount()))
	k(c.waitSeconds, st.AcquireDuration().Seconds())
}

// newQueryHistogram times each store operation against PostgreSQL, so the database's share of a
// call's latency (core records the whole call) is visible.
func newQueryHistogram() *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "prism_postgres_query_duration_seconds",
		Help:    "Time spent in PostgreSQL per KeyValue operation (including waiting for a connection).",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	}, []string{"operation"})
}

func observer(h *prometheus.HistogramVec) func(op string, start time.Time) {
	return func(op string, start time.Time) {
		h.WithLabelValues(op).Observe(time.Since(start).Seconds())
	}
}
