package core

import (
	"context"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// listen opens a TCP listener; with reusePort it sets SO_REUSEPORT first, so a new process can
// bind the same port while the old one still serves (control_plane.reuse_port, used by
// prism-watcher for zero-downtime swaps). Linux then spreads new connections over both.
func listen(ctx context.Context, reusePort bool, addr string) (net.Listener, error) {
	var lc net.ListenConfig
	if reusePort {
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var sockErr error
			if err := c.Control(func(fd uintptr) {
				sockErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
			}); err != nil {
				return err
			}
			return sockErr
		}
	}
	return lc.Listen(ctx, "tcp", addr)
}
