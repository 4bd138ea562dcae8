package credentials

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.yaml.in/yaml/v3"

	"github.com/prism-gateway/plugins/core/config"
)

// debounce lets a writer finish a burst of events (Kubernetes' ..data swap, editors) before the
// file is read.
const debounce = 100 * time.Millisecond

// File is the source that reads credentials from a watched file or directory.
type File struct {
	cfg      FileConfig
	fallback Credentials
	log      *slog.Logger
	metrics  *Metrics
	h        *holder
	bg       lifecycle
}

// NewFile returns a file source; fallback supplies the username when the file holds none.
func NewFile(cfg FileConfig, fallback Credentials, log *slog.Logger, metrics *Metrics) *File {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &File{cfg: cfg, fallback: fallback, log: log, metrics: metrics, h: newHolder()}
}

// Start reads the file once (failing if it cannot) and starts watching it.
func (f *File) Start(ctx context.Context) error {
	var watcher *fsnotify.Watcher
	first := func() error {
		creds, err := f.read()
		if err != nil {
			f.metrics.failed(KindFile)
			return fmt.Errorf("read credentials file %s: %w", f.cfg.Path, err)
		}
		f.h.set(creds, nil)
		f.metrics.setExpiry(KindFile, creds)
		if watcher, err = fsnotify.NewWatcher(); err != nil {
			return fmt.Errorf("watch credentials file %s: %w", f.cfg.Path, err)
		}
		// Watching the directory sees renames, symlink swaps and in-place writes alike.
		dir := f.cfg.Path
		if info, statErr := os.Stat(f.cfg.Path); statErr == nil && !info.IsDir() {
			dir = filepath.Dir(f.cfg.Path)
		}
		if err := watcher.Add(dir); err != nil {
			_ = watcher.Close()
			return fmt.Errorf("watch credentials directory %s: %w", dir, err)
		}
		return nil
	}
	return f.bg.start(ctx, "credentials file source", first, func(ctx context.Context) { f.watch(ctx, watcher) })
}

// Stop ends watching and waits for the watcher goroutine.
func (f *File) Stop(ctx context.Context) error { return f.bg.stop(ctx, "credentials file source") }

// Current implements Source.
func (f *File) Current() (Credentials, error) { return f.h.current() }

// Changes implements Source.
func (f *File) Changes() <-chan struct{} { return f.h.changes() }

// Describe implements Source.
func (f *File) Describe() Description { return f.h.describe(KindFile, f.cfg.Path) }

func (f *File) watch(ctx context.Context, watcher *fsnotify.Watcher) {
	defer func() { _ = watcher.Close() }()
	poll := time.NewTicker(f.cfg.PollInterval)
	defer poll.Stop()
	settle := time.NewTimer(time.Hour)
	settle.Stop()
	defer settle.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-watcher.Events:
			if !ok {
				return
			}
			settle.Reset(debounce)
		case err, ok := <-watcher.Errors:
			if !ok {
				return
			}
			f.log.Warn("credentials file watch error; the periodic re-read continues",
				"path", f.cfg.Path, "error", err)
		case <-settle.C:
			f.reload()
		case <-poll.C:
			f.reload()
		}
	}
}

// reload re-reads the file; a file that does not parse keeps the old credentials.
func (f *File) reload() {
	creds, err := f.read()
	if err != nil {
		f.h.setError(err)
		f.metrics.failed(KindFile)
		f.log.Warn("credentials file unreadable; keeping the previous credentials",
			"path", f.cfg.Path, "error", err)
		return
	}
	f.h.set(creds, func(stored Credentials) {
		f.metrics.rotated(KindFile, stored)
		f.log.Info("credentials changed", "source", KindFile, "path", f.cfg.Path,
			"username", stored.Username, "serial", stored.Serial)
	})
}

// read parses the file or directory. Its errors never quote the content.
func (f *File) read() (Credentials, error) {
	info, err := os.Stat(f.cfg.Path)
	if err != nil {
		return Credentials{}, fmt.Errorf("stat: %w", err)
	}
	var fields map[string]string
	if info.IsDir() {
		fields, err = f.readDir()
	} else {
		fields, err = f.readFile()
	}
	if err != nil {
		return Credentials{}, err
	}
	return f.fromFields(fields)
}

func (f *File) readDir() (map[string]string, error) {
	fields := map[string]string{}
	for _, name := range []string{f.cfg.UsernameField, f.cfg.PasswordField, f.cfg.CertField, f.cfg.KeyField, f.cfg.ExpiryField} {
		if name == "" || strings.ContainsAny(name, `/\`) {
			continue
		}
		data, err := os.ReadFile(filepath.Join(f.cfg.Path, name)) //nolint:gosec // the operator's configured credentials directory
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", name, err)
		}
		fields[name] = string(data)
	}
	return fields, nil
}

func (f *File) readFile() (map[string]string, error) {
	data, err := os.ReadFile(f.cfg.Path)
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	format := f.cfg.Format
	if format == FormatAuto {
		format = detectFormat(data)
	}
	switch format {
	case FormatPassword:
		return map[string]string{f.cfg.PasswordField: strings.TrimRight(string(data), "\r\n")}, nil
	case FormatJSON:
		var doc map[string]any
		if err := json.Unmarshal(data, &doc); err != nil {
			return nil, errors.New("not a JSON object of fields")
		}
		return stringFields(doc), nil
	case FormatYAML:
		var doc map[string]any
		if err := yaml.Unmarshal(data, &doc); err != nil || doc == nil {
			return nil, errors.New("not a YAML mapping of fields")
		}
		return stringFields(doc), nil
	default:
		return parseEnv(data)
	}
}

// detectFormat guesses a file's format: JSON object, key=value lines, YAML mapping, else a bare
// password.
func detectFormat(data []byte) string {
	trimmed := bytes.TrimSpace(data)
	switch {
	case bytes.HasPrefix(trimmed, []byte("{")):
		return FormatJSON
	case len(trimmed) == 0:
		return FormatPassword
	}
	var first []byte
	lines := 0
	for _, line := range bytes.Split(trimmed, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		if lines++; first == nil {
			first = line
		}
	}
	switch {
	case bytes.Contains(first, []byte("=")) && (lines > 1 || bytes.HasPrefix(first, []byte("export "))):
		return FormatEnv
	case bytes.Contains(first, []byte(": ")) || bytes.HasSuffix(first, []byte(":")):
		return FormatYAML
	}
	return FormatPassword
}

func stringFields(doc map[string]any) map[string]string {
	out := make(map[string]string, len(doc))
	for k, v := range doc {
		switch v := v.(type) {
		case string:
			out[k] = v
		case nil:
		case time.Time:
			out[k] = v.Format(time.RFC3339Nano)
		default:
			out[k] = fmt.Sprint(v)
		}
	}
	return out
}

// parseEnv reads key=value lines; blank lines and # comments are skipped; values may be quoted.
func parseEnv(data []byte) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		key, value, ok := strings.Cut(strings.TrimPrefix(text, "export "), "=")
		if !ok {
			return nil, fmt.Errorf("line %d: not key=value", line)
		}
		value = strings.TrimSpace(value)
		if len(value) >= 2 && (value[0] == '"' || value[0] == '\'') && value[len(value)-1] == value[0] {
			value = value[1 : len(value)-1]
		}
		out[strings.TrimSpace(key)] = value
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read lines: %w", err)
	}
	return out, nil
}

func (f *File) fromFields(fields map[string]string) (Credentials, error) {
	creds := Credentials{Username: f.fallback.Username}
	if u := strings.TrimSpace(fields[f.cfg.UsernameField]); u != "" {
		creds.Username = u
	}
	password, ok := fields[f.cfg.PasswordField]
	password = strings.TrimRight(password, "\r\n")
	if !ok || password == "" {
		return Credentials{}, fmt.Errorf("field %q is missing or empty", f.cfg.PasswordField)
	}
	creds.Password = config.Secret(password)
	if c := fields[f.cfg.CertField]; c != "" {
		creds.ClientCertPEM = []byte(c)
	}
	if k := fields[f.cfg.KeyField]; k != "" {
		creds.ClientKeyPEM = config.Secret(k)
	}
	if e := strings.TrimSpace(fields[f.cfg.ExpiryField]); e != "" {
		t, err := time.Parse(time.RFC3339Nano, e)
		if err != nil {
			return Credentials{}, fmt.Errorf("field %q: not an RFC 3339 time", f.cfg.ExpiryField)
		}
		creds.Expiry = t
	}
	return creds, nil
}

var _ Source = (*File)(nil)
