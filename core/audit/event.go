package audit

import (
	"net"
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"
)

// The kinds of audit line.
const (
	KindCall        = "call"
	KindStreamStart = "stream_start"
	KindStreamEnd   = "stream_end"
)

// Event is one audit line.
type Event struct {
	Time      time.Time
	Kind      string // KindCall, KindStreamStart or KindStreamEnd
	RequestID string
	Identity  string
	Source    string // how the identity was established: spiffe, dns, cn, jwt, anonymous
	Peer      Peer
	Method    string // full gRPC method
	Noun      string // namespace or topic; the line lists Targets under its plural
	Targets   []string
	// RequestItems and ResponseItems count items, keys, entries or records in the messages.
	RequestItems, ResponseItems int
	// RequestMessages and ResponseMessages count stream messages (stream_end only).
	RequestMessages, ResponseMessages int
	Code                              string
	Duration                          time.Duration
	Error                             string // the status message of a refused call (no keys or values)
}

// AppendJSON appends e as one JSON line (with its newline) to b. It uses no reflection and
// allocates nothing beyond growing b.
func (e *Event) AppendJSON(b []byte) []byte {
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
	b = appendPeer(b, e.Peer)
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
	if e.Kind != KindStreamStart {
		b = append(b, `,"request_items":`...)
		b = strconv.AppendInt(b, int64(e.RequestItems), 10)
		b = append(b, `,"response_items":`...)
		b = strconv.AppendInt(b, int64(e.ResponseItems), 10)
		if e.Kind == KindStreamEnd {
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
	return append(b, "}\n"...)
}

// Peer is a caller's network address as the audit line prints it ("10.0.3.7:51234",
// "[::1]:51234", as net.TCPAddr prints them). A TCP address is kept as a value and formatted
// straight into the line, so neither the call nor the line builds a string for it.
type Peer struct {
	addr netip.AddrPort
	name string // any other kind of address
}

// PeerOf is the Peer of a net.Addr; the zero Peer (printed "") for nil.
func PeerOf(a net.Addr) Peer {
	if tcp, ok := a.(*net.TCPAddr); ok && tcp != nil {
		if ap := tcp.AddrPort(); ap.Addr().IsValid() {
			return Peer{addr: netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())}
		}
	}
	if a == nil {
		return Peer{}
	}
	return Peer{name: a.String()}
}

// String is the address as the audit line prints it.
func (p Peer) String() string { return string(p.appendTo(nil)) }

func (p Peer) appendTo(b []byte) []byte {
	if p.addr.IsValid() {
		return p.addr.AppendTo(b)
	}
	return append(b, p.name...)
}

func appendPeer(b []byte, p Peer) []byte {
	if p.addr.IsValid() {
		b = append(b, '"')
		b = p.addr.AppendTo(b)
		return append(b, '"')
	}
	return appendString(b, p.name)
}

// appendString appends s as a JSON string; invalid UTF-8 becomes U+FFFD. Runs of bytes that
// need no escaping are copied whole.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	run := 0 // start of the bytes not yet copied
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r != utf8.RuneError || size != 1 {
				i += size
				continue
			}
		}
		b = append(b, s[run:i]...)
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, `\ufffd`...)
		}
		i++
		run = i
	}
	b = append(b, s[run:]...)
	return append(b, '"')
}
