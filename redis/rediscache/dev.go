//go:build !nodev

package rediscache

import (
	"fmt"

	"github.com/alicebob/miniredis/v2"
)

// EnableDevMode implements core.DevModeSupporter: the plugin serves from an embedded, in-memory
// Redis (miniredis) on a loopback port instead of the configured one. Nothing survives a restart,
// which is what a cache may do; dataDir is not used.
func (p *Plugin) EnableDevMode(string) error {
	p.dev = true
	return nil
}

// startDevRedis starts the embedded Redis and points the backend section at it.
func (p *Plugin) startDevRedis() error {
	m := miniredis.NewMiniRedis()
	// Keys expire on the wall clock, as on a real Redis (miniredis otherwise waits for FastForward).
	m.ClockTTL(true)
	if err := m.StartAddr("127.0.0.1:0"); err != nil {
		return fmt.Errorf("start embedded redis: %w", err)
	}
	p.devRedis, p.devAddr = m, m.Addr()
	dev := *p.backend
	dev.Address, dev.Mode, dev.Database = m.Addr(), ModeSingle, 0
	dev.Username, dev.Password = "", ""
	dev.TLSEnabled, dev.TLSCAFile = false, ""
	p.backend = &dev
	p.settings.Store(newSettings(&dev, &p.settings.Load().limits))
	p.log.Warn("DEV MODE: serving the cache from an embedded in-memory Redis; not for production", "addr", m.Addr())
	return nil
}
