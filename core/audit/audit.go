// Package audit writes the audit log: one JSON line per data call, and one at the start and one
// at the end of each stream, on a sink of its own (stderr or a file) apart from the
// operational log. Lines name who did what where and how it ended; they never carry keys, values
// or secrets.
package audit

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/prism-gateway/plugins/core/config"
)

// Sink is an open audit destination. A file sink is opened anew by every reload, so logrotate
// can move the old file away; the old sink is closed once the new one is in place.
type Sink struct {
	mu     sync.Mutex
	out    io.Writer
	closer io.Closer
	buf    []byte
}

// Open opens the configured output; nil (no audit) when the audit log is disabled.
func Open(cfg config.AuditConfig) (*Sink, error) {
	if !cfg.Enabled {
		return nil, nil
	}
	if cfg.Output == "stderr" {
		return &Sink{out: os.Stderr}, nil
	}
	f, err := os.OpenFile(cfg.Output, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("auth.audit.output: %w", err)
	}
	return &Sink{out: f, closer: f}, nil
}

// Close closes a file sink. Safe on nil and twice.
func (s *Sink) Close() error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closer == nil {
		return nil
	}
	err := s.closer.Close()
	s.closer = nil
	s.out = io.Discard
	return err
}

// Event is one audit line.
type Event struct {
	Time      time.Time
	Kind      string // call, stream_start or stream_end
	RequestID string
	Identity  string
	Source    string // how the identity was established: spiffe, dns, cn, jwt, anonymous
	Peer      string
	Method    string // full gRPC method
	Noun      string // namespace or topic
	Targets   []string
	// RequestItems and ResponseItems count items, keys, entries or records in the messages.
	RequestItems, ResponseItems int
	// RequestMessages and ResponseMessages count stream messages (stream_end only).
	RequestMessages, ResponseMessages int
	Code                              string
	Duration                          time.Duration
	Error                             string // the status message of a refused call (no keys or values)
}

// Write appends one JSON line. Safe for concurrent use; a nil sink writes nothing.
func (s *Sink) Write(e *Event) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.buf[:0]
	b = append(b, `{"time":"`...)
	b = e.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","event":`...)
	b = appendString(b, e.Kind)
	b = append(b, `,"request_id":`...)
	b = appendString(b, e.RequestID)
	b = append(b, `,"identity":`...)
	b = appendString(b, e.Identity)
	b = append(b, `,"identity_source":`...)
	b = appendString(b, e.Source)
	b = append(b, `,"peer":`...)
	b = appendString(b, e.Peer)
	b = append(b, `,"method":`...)
	b = appendString(b, e.Method)
	if e.Noun != "" {
		b = append(b, `,"`...)
		b = append(b, e.Noun...)
		b = append(b, `s":[`...)
		for i, t := range e.Targets {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, t)
		}
		b = append(b, ']')
	}
	if e.Kind != "stream_start" {
		b = append(b, `,"request_items":`...)
		b = strconv.AppendInt(b, int64(e.RequestItems), 10)
		b = append(b, `,"response_items":`...)
		b = strconv.AppendInt(b, int64(e.ResponseItems), 10)
		if e.Kind == "stream_end" {
			b = append(b, `,"request_messages":`...)
			b = strconv.AppendInt(b, int64(e.RequestMessages), 10)
			b = append(b, `,"response_messages":`...)
			b = strconv.AppendInt(b, int64(e.ResponseMessages), 10)
		}
		b = append(b, `,"code":`...)
		b = appendString(b, e.Code)
		b = append(b, `,"duration_us":`...)
		b = strconv.AppendInt(b, e.Duration.Microseconds(), 10)
	}
	if e.Error != "" {
		b = append(b, `,"error":`...)
		b = appendString(b, e.Error)
	}
	b = append(b, "}\n"...)
	_, _ = s.out.Write(b)
	s.buf = b
}

// appendString appends s as a JSON string; invalid UTF-8 becomes U+FFFD.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}
