package kafkastream

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/prism-gateway/plugins/core/config"
)

// SASL mechanisms the plugin speaks.
const (
	MechanismNone        = "none"
	MechanismPlain       = "PLAIN"
	MechanismScramSHA256 = "SCRAM-SHA-256"
	MechanismScramSHA512 = "SCRAM-SHA-512"
)

// BackendConfig is the plugin's `backend` section.
type BackendConfig struct {
	// Brokers are the bootstrap brokers, host:port.
	Brokers []string `yaml:"brokers"`
	// Topic is used when a request leaves its topic empty.
	Topic string `yaml:"topic"`
	// SASLMechanism is none, PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty means SCRAM-SHA-512
	// when a username is set, else none.
	SASLMechanism string        `yaml:"sasl_mechanism"`
	SASLUsername  string        `yaml:"sasl_username"`
	SASLPassword  config.Secret `yaml:"sasl_password"`
	// TLSEnabled turns on TLS to the brokers; TLSCAFile adds a private CA.
	TLSEnabled bool   `yaml:"tls_enabled"`
	TLSCAFile  string `yaml:"tls_ca_file"`
	// DialTimeout bounds connecting to one broker.
	DialTimeout time.Duration `yaml:"dial_timeout"`
}

// LimitsConfig is the plugin's `limits` section.
type LimitsConfig struct{}

// Validate implements config.Section.
func (*LimitsConfig) Validate() error { return nil }

func defaultBackend() *BackendConfig {
	return &BackendConfig{
		Brokers:     []string{"127.0.0.1:9092"},
		DialTimeout: 5 * time.Second,
	}
}

// mechanism resolves the empty default.
func (b *BackendConfig) mechanism() string {
	if b.SASLMechanism != "" {
		return b.SASLMechanism
	}
	if b.SASLUsername != "" {
		return MechanismScramSHA512
	}
	return MechanismNone
}

// Validate implements config.Section.
func (b *BackendConfig) Validate() error {
	var errs []error
	if len(b.Brokers) == 0 {
		errs = append(errs, errors.New("brokers: at least one broker is required (or set KAFKA_BROKERS)"))
	}
	for i, broker := range b.Brokers {
		if _, _, err := net.SplitHostPort(broker); err != nil {
			errs = append(errs, fmt.Errorf("brokers.%d: must be host:port, got %q", i, broker))
		}
	}
	switch m := b.mechanism(); m {
	case MechanismNone:
	case MechanismPlain, MechanismScramSHA256, MechanismScramSHA512:
		if b.SASLUsername == "" {
			errs = append(errs, fmt.Errorf("sasl_username: required with sasl_mechanism %s", m))
		}
		if !b.SASLPassword.IsSet() {
			errs = append(errs, fmt.Errorf("sasl_password: required with sasl_mechanism %s", m))
		}
	default:
		errs = append(errs, fmt.Errorf("sasl_mechanism: must be none, PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, got %q", m))
	}
	if b.TLSCAFile != "" && !b.TLSEnabled {
		errs = append(errs, errors.New("tls_ca_file: needs tls_enabled: true"))
	}
	if b.DialTimeout <= 0 {
		errs = append(errs, fmt.Errorf("dial_timeout: must be positive, got %s", b.DialTimeout))
	}
	return errors.Join(errs...)
}

// clientOptions turns the backend section into franz-go options shared by every client.
func (b *BackendConfig) clientOptions() ([]kgo.Opt, error) {
	opts := []kgo.Opt{
		kgo.SeedBrokers(b.Brokers...),
		kgo.DialTimeout(b.DialTimeout),
	}
	var mech sasl.Mechanism
	user, pass := b.SASLUsername, b.SASLPassword.Reveal()
	switch b.mechanism() {
	case MechanismPlain:
		mech = plain.Auth{User: user, Pass: pass}.AsMechanism()
	case MechanismScramSHA256:
		mech = scram.Auth{User: user, Pass: pass}.AsSha256Mechanism()
	case MechanismScramSHA512:
		mech = scram.Auth{User: user, Pass: pass}.AsSha512Mechanism()
	}
	if mech != nil {
		opts = append(opts, kgo.SASL(mech))
	}
	if b.TLSEnabled {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if b.TLSCAFile != "" {
			pem, err := os.ReadFile(b.TLSCAFile)
			if err != nil {
				return nil, fmt.Errorf("backend.tls_ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, errors.New("backend.tls_ca_file: no PEM certificates found")
			}
			tc.RootCAs = pool
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	return opts, nil
}

// Schema declares this plugin's configuration.
func Schema() config.Schema {
	return config.Schema{
		Plugin:      "kafka",
		Port:        9091,
		MetricsPort: 9191,
		NewBackend:  func() config.Section { return defaultBackend() },
		NewLimits:   func() config.Section { return &LimitsConfig{} },
		EnvAliases: map[string]string{
			"KAFKA_BROKERS":       "backend.brokers",
			"KAFKA_TOPIC":         "backend.topic",
			"KAFKA_SASL_USERNAME": "backend.sasl_username",
			"KAFKA_SASL_PASSWORD": "backend.sasl_password",
		},
	}
}

