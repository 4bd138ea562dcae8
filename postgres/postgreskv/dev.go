//go:build !nodev

package postgreskv

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// devDBFile is the database file inside the dev data directory.
const devDBFile = "keyvalue.db"

// EnableDevMode implements core.DevModeSupporter: the plugin serves the same KeyValueService,
// with the same validation, limits, page tokens and purge, from an embedded SQLite database in
// dataDir instead of PostgreSQL. The backend section's connection settings are not used.
func (p *Plugin) EnableDevMode(dataDir string) error {
	if dataDir == "" {
		return errors.New("dev mode needs a data directory")
	}
	p.dev, p.devDir = true, dataDir
	return nil
}

// devSchemaVersion is the dev database's schema version, reported in GetInfo.
func devSchemaVersion() int { return len(sqliteMigrations) }

// startDev opens (creating if needed) the dev database and migrates it. Unlike PostgreSQL there
// is nothing to wait for, so a directory that cannot be created or written fails Start.
func (p *Plugin) startDev(ctx context.Context) error {
	if err := os.MkdirAll(p.devDir, 0o700); err != nil {
		return fmt.Errorf("create dev data directory: %w", err)
	}
	path := filepath.Join(p.devDir, devDBFile)
	st, err := OpenSQLiteStore(ctx, path, p.retention)
	if err != nil {
		return fmt.Errorf("open dev database: %w", err)
	}
	if p.backend.PageTokenKey.IsSet() {
		sum := sha256.Sum256([]byte(p.backend.PageTokenKey.Reveal()))
		st.tokens.key = sum[:]
	}
	st.observe = observer(p.queries)
	p.devKV.Store(&devHandle{st})
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	p.log.Info("dev mode: KeyValue data kept in SQLite", "path", path, "schema_version", len(sqliteMigrations))
	return nil
}
