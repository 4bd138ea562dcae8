package main

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// WatchOptions names what to watch.
type WatchOptions struct {
	Sources    []string      // folders whose .go files (recursively) are code
	ConfigFile string        // the plugin's config file
	Debounce   time.Duration // quiet time before a batch of changes is acted on
}

// Change is one debounced batch of file events.
type Change struct {
	Code   bool // a .go file or go.mod/go.sum changed: rebuild and swap
	Config bool // only the config file changed: Reload
}

// Watcher turns file-system events into debounced Changes.
type Watcher struct {
	opts WatchOptions
	fs   *fsnotify.Watcher
}

// NewWatcher watches every folder under opts.Sources and the config file's folder (editors and
// Kubernetes replace files by rename, so the folder is watched, not the file).
func NewWatcher(opts WatchOptions) (*Watcher, error) {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("start file watcher: %w", err)
	}
	w := &Watcher{opts: opts, fs: fw}
	for _, src := range opts.Sources {
		err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return err
			}
			if name := d.Name(); name == "testdata" || strings.HasPrefix(name, ".") && path != src {
				return filepath.SkipDir
			}
			return fw.Add(path)
		})
		if err != nil {
			_ = fw.Close()
			return nil, fmt.Errorf("watch %s: %w", src, err)
		}
	}
	if err := fw.Add(filepath.Dir(opts.ConfigFile)); err != nil {
		_ = fw.Close()
		return nil, fmt.Errorf("watch config folder: %w", err)
	}
	return w, nil
}

// Run calls act once per debounced batch until ctx ends; act runs on Run's goroutine, so
// batches never overlap.
func (w *Watcher) Run(ctx context.Context, act func(Change)) error {
	var pending Change
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err, ok := <-w.fs.Errors:
			if !ok {
				return nil
			}
			return fmt.Errorf("file watcher: %w", err)
		case ev, ok := <-w.fs.Events:
			if !ok {
				return nil
			}
			c := w.classify(ev)
			if !c.Code && !c.Config {
				continue
			}
			pending.Code = pending.Code || c.Code
			pending.Config = pending.Config || c.Config
			timer.Reset(w.opts.Debounce)
		case <-timer.C:
			act(pending)
			pending = Change{}
		}
	}
}

func (w *Watcher) classify(ev fsnotify.Event) Change {
	if ev.Op == fsnotify.Chmod {
		return Change{}
	}
	if ev.Has(fsnotify.Create) {
		if info, err := os.Stat(ev.Name); err == nil && info.IsDir() {
			_ = w.fs.Add(ev.Name)
		}
	}
	base := filepath.Base(ev.Name)
	switch {
	case sameFile(ev.Name, w.opts.ConfigFile):
		return Change{Config: true}
	case strings.HasSuffix(base, ".go") && !strings.HasSuffix(base, "_test.go"), base == "go.mod", base == "go.sum":
		return Change{Code: true}
	}
	return Change{}
}

func sameFile(a, b string) bool {
	a, _ = filepath.Abs(a)
	b, _ = filepath.Abs(b)
	return a == b
}

// Close stops watching.
func (w *Watcher) Close() error { return w.fs.Close() }
