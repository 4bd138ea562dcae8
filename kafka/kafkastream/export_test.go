package kafkastream

import (
	"context"
	"net"
)

// SetDialer routes the producer client's connections through dial (tests only).
func (p *Plugin) SetDialer(dial func(ctx context.Context, network, host string) (net.Conn, error)) {
	p.dial = dial
}
