package credentials

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the credential metrics of one plugin, labelled by source kind.
type Metrics struct {
	rotations *prometheus.CounterVec
	errors    *prometheus.CounterVec
	expiry    *prometheus.GaugeVec
	renewals  *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them on reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "prism_credentials_rotations_total",
			Help: "Times the backend credentials changed.",
		}, []string{"source"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "prism_credentials_errors_total",
			Help: "Failed attempts to read, renew or issue backend credentials.",
		}, []string{"source"}),
		expiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "prism_credentials_expiry_timestamp_seconds",
			Help: "Unix time at which the current backend credentials expire; 0 means never.",
		}, []string{"source"}),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "prism_credentials_lease_renewals_total",
			Help: "Vault lease renewals of backend credentials.",
		}, []string{"source"}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.rotations, err = register(reg, m.rotations); err != nil {
		return nil, err
	}
	if m.errors, err = register(reg, m.errors); err != nil {
		return nil, err
	}
	if m.expiry, err = register(reg, m.expiry); err != nil {
		return nil, err
	}
	if m.renewals, err = register(reg, m.renewals); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, or returns the collector already registered under its name, so two
// sources in one process share their metrics.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var already prometheus.AlreadyRegisteredError
		if errors.As(err, &already) {
			if existing, ok := already.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("register credential metrics: %w", err)
	}
	return c, nil
}

func (m *Metrics) rotated(kind string, c Credentials) {
	if m == nil {
		return
	}
	m.rotations.WithLabelValues(kind).Inc()
	m.setExpiry(kind, c)
}

func (m *Metrics) setExpiry(kind string, c Credentials) {
	if m == nil {
		return
	}
	v := 0.0
	if !c.Expiry.IsZero() {
		v = float64(c.Expiry.UnixNano()) / 1e9
	}
	m.expiry.WithLabelValues(kind).Set(v)
}

func (m *Metrics) failed(kind string) {
	if m == nil {
		return
	}
	m.errors.WithLabelValues(kind).Inc()
}

func (m *Metrics) renewed(kind string) {
	if m == nil {
		return
	}
	m.renewals.WithLabelValues(kind).Inc()
}

// Rotations returns the rotation counter of one source kind, for tests and GetMetrics.
func (m *Metrics) Rotations(kind string) prometheus.Counter { return m.rotations.WithLabelValues(kind) }

// Errors returns the error counter of one source kind.
func (m *Metrics) Errors(kind string) prometheus.Counter { return m.errors.WithLabelValues(kind) }

// Renewals returns the lease renewal counter of one source kind.
func (m *Metrics) Renewals(kind string) prometheus.Counter { return m.renewals.WithLabelValues(kind) }
