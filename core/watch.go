package core

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// fileWatcher calls onChange when the contents of any of its files change, once they have been
// quiet for the debounce time. It watches the files' directories, not the files, so it follows
// replacement by rename (editors, cert-manager) and Kubernetes' ConfigMap and Secret updates,
// which swap the ..data symlink in the directory. Unchanged contents (a touch, a rewrite with the
// same bytes) do not call onChange.
type fileWatcher struct {
	w        *fsnotify.Watcher
	debounce time.Duration
	onChange func()

	mu     sync.Mutex
	dirs   map[string]bool
	hashes map[string][32]byte
}

func newFileWatcher(files []string, debounce time.Duration, onChange func()) (*fileWatcher, error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch files: %w", err)
	}
	fw := &fileWatcher{w: w, debounce: debounce, onChange: onChange, dirs: map[string]bool{}}
	fw.setFiles(files)
	return fw, nil
}

// setFiles replaces the watched files and remembers their current contents.
func (fw *fileWatcher) setFiles(files []string) {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	fw.hashes = map[string][32]byte{}
	for _, f := range files {
		if f == "" {
			continue
		}
		fw.hashes[f] = hashFile(f)
		dir := filepath.Dir(f)
		if !fw.dirs[dir] {
			if err := fw.w.Add(dir); err == nil {
				fw.dirs[dir] = true
			}
		}
	}
}

func hashFile(path string) [32]byte {
	data, err := os.ReadFile(path) //nolint:gosec // paths come from the operator's config
	if err != nil {
		return [32]byte{}
	}
	return sha256.Sum256(data)
}

// changed re-hashes the files, records the new contents and reports whether any differ.
func (fw *fileWatcher) changed() bool {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	any := false
	for f, old := range fw.hashes {
		if h := hashFile(f); h != old {
			fw.hashes[f] = h
			any = true
		}
	}
	return any
}

// run delivers debounced changes until ctx ends, then closes the watcher.
func (fw *fileWatcher) run(ctx context.Context) {
	defer func() { _ = fw.w.Close() }()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-fw.w.Events:
			if !ok {
				return
			}
			timer.Reset(fw.debounce)
		case _, ok := <-fw.w.Errors:
			if !ok {
				return
			}
		case <-timer.C:
			if fw.changed() {
				fw.onChange()
			}
		}
	}
}
