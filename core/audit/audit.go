// Package audit writes the audit log: one JSON line per data call, and one at the start and one
// at the end of each stream, on a sink of its own (stderr or a file) apart from the
// operational log. Lines name who did what where and how it ended; they never carry keys, values
// or secrets.
//
// A call only encodes its line and appends it to the sink's buffer; a goroutine per sink writes
// the buffer out every FlushInterval, sooner once FlushBytes are waiting, and on Close. A call
// therefore never waits for the disk. When the writer cannot keep up and MaxBuffered bytes are
// waiting, further lines are dropped, counted in Stats and reported in the operational log,
// rather than slowing or blocking calls.
package audit

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prism-gateway/plugins/core/config"
)

// Defaults of Options.
const (
	DefaultFlushInterval = 100 * time.Millisecond
	DefaultFlushBytes    = 64 << 10
	DefaultMaxBuffered   = 4 << 20
	// DefaultCloseTimeout bounds how long Close waits for the last write (a stuck stderr pipe must
	// not hold up shutdown).
	DefaultCloseTimeout = 5 * time.Second
)

// pipeBuf is the size up to which a write to a pipe is atomic (POSIX PIPE_BUF on Linux). Writes
// to stderr, which the operational log shares, are cut at line ends below it, so a line is
// never split by another writer's line.
const pipeBuf = 4096

// Options tune a sink; zero fields take the defaults.
type Options struct {
	// FlushInterval is how long a line may wait in memory before it is written.
	FlushInterval time.Duration
	// FlushBytes wakes the writer before the interval once this many bytes wait.
	FlushBytes int
	// MaxBuffered bounds the bytes waiting for the writer; a line that does not fit is dropped.
	MaxBuffered int
	// CloseTimeout bounds Close's wait for the writer.
	CloseTimeout time.Duration
	// Log receives write errors and dropped-line reports, at most once per flush; nil logs nothing.
	Log *slog.Logger
	// Stats counts lost lines across all the sinks of a process; nil counts nothing.
	Stats *Stats
}

func (o Options) withDefaults() Options {
	if o.FlushInterval <= 0 {
		o.FlushInterval = DefaultFlushInterval
	}
	if o.FlushBytes <= 0 {
		o.FlushBytes = DefaultFlushBytes
	}
	if o.MaxBuffered <= 0 {
		o.MaxBuffered = DefaultMaxBuffered
	}
	if o.CloseTimeout <= 0 {
		o.CloseTimeout = DefaultCloseTimeout
	}
	if o.Stats == nil {
		o.Stats = &Stats{}
	}
	return o
}

// Stats counts audit lines that were lost. It outlives sinks, which every reload replaces, so
// its counts only grow.
type Stats struct {
	dropped     atomic.Uint64
	writeErrors atomic.Uint64
}

// Dropped is how many lines were lost: not buffered because the buffer was full, written after
// their sink was closed, or part of a write that failed.
func (s *Stats) Dropped() uint64 { return s.dropped.Load() }

// WriteErrors is how many writes to an audit output failed.
func (s *Stats) WriteErrors() uint64 { return s.writeErrors.Load() }

// Sink is an open audit destination. A file sink is opened anew by every reload, so logrotate
// can move the old file away; the old sink hands late lines on to the new one (CloseInto).
type Sink struct {
	out      io.Writer
	closer   io.Closer
	name     string
	maxChunk int // longest single write; 0 = no limit
	opts     Options

	mu      sync.Mutex
	pending []byte // lines waiting for the writer
	lines   int    // lines in pending
	woken   bool   // the writer has been woken for pending
	closed  bool
	next    *Sink // where lines go once closed
	dropped int   // lines dropped since the writer last reported

	wake chan struct{}
	stop chan struct{}
	done chan struct{}

	// Owned by the writer goroutine; closeErr is read once done is closed.
	spare    []byte
	closeErr error
}

// Open opens the configured output; nil (no audit) when the audit log is disabled.
func Open(cfg config.AuditConfig, opts Options) (*Sink, error) {
	if !cfg.Enabled {
		return nil, nil
	}
	if cfg.Output == "stderr" {
		return newSink(os.Stderr, nil, "stderr", pipeBuf, opts), nil
	}
	f, err := os.OpenFile(cfg.Output, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("auth.audit.output: %w", err)
	}
	return newSink(f, f, cfg.Output, 0, opts), nil
}

// newSink starts the writer of a sink over out; closer, when set, is closed by Close.
func newSink(out io.Writer, closer io.Closer, name string, maxChunk int, opts Options) *Sink {
	opts = opts.withDefaults()
	s := &Sink{
		out: out, closer: closer, name: name, maxChunk: maxChunk, opts: opts,
		pending: make([]byte, 0, opts.FlushBytes*2),
		spare:   make([]byte, 0, opts.FlushBytes*2),
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go s.run()
	return s
}

// linePool holds the buffers calls encode their line into, so a call allocates nothing for it.
var linePool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// Write encodes e and queues it for the writer. Safe for concurrent use; a nil sink writes
// nothing. It never blocks on the output.
func (s *Sink) Write(e *Event) {
	if s == nil {
		return
	}
	bp := linePool.Get().(*[]byte)
	line := e.AppendJSON((*bp)[:0])
	s.enqueue(line)
	if cap(line) <= 64<<10 { // do not keep a pathological line's buffer alive
		*bp = line
		linePool.Put(bp)
	}
}

func (s *Sink) enqueue(line []byte) {
	s.mu.Lock()
	if s.closed {
		next := s.next
		if next == nil {
			s.dropped++
		}
		s.mu.Unlock()
		if next != nil {
			next.enqueue(line)
		} else {
			s.opts.Stats.dropped.Add(1)
		}
		return
	}
	if len(s.pending)+len(line) > s.opts.MaxBuffered {
		s.dropped++
		s.mu.Unlock()
		s.opts.Stats.dropped.Add(1)
		return
	}
	s.pending = append(s.pending, line...)
	s.lines++
	wake := !s.woken && len(s.pending) >= s.opts.FlushBytes
	if wake {
		s.woken = true
	}
	s.mu.Unlock()
	if wake {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// run writes the buffer out on every tick, when woken, and a last time when stopped; then it
// closes the output, so a file is closed even when Close stopped waiting for a stuck write.
func (s *Sink) run() {
	defer close(s.done)
	tick := time.NewTicker(s.opts.FlushInterval)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-s.wake:
		case <-s.stop:
			s.flush()
			if s.closer != nil {
				if err := s.closer.Close(); err != nil {
					s.closeErr = fmt.Errorf("close audit log %s: %w", s.name, err)
				}
			}
			return
		}
		s.flush()
	}
}

// flush swaps the pending buffer for the spare one and writes it, outside the lock.
func (s *Sink) flush() {
	s.mu.Lock()
	batch, lines := s.pending, s.lines
	s.pending, s.lines, s.woken = s.spare[:0], 0, false
	dropped := s.dropped
	s.dropped = 0
	s.mu.Unlock()
	if len(batch) > 0 {
		if err := s.writeOut(batch); err != nil {
			s.opts.Stats.writeErrors.Add(1)
			s.opts.Stats.dropped.Add(uint64(lines))
			if s.opts.Log != nil {
				s.opts.Log.Error("audit log write failed; lines lost", "output", s.name, "lines", lines, "error", err)
			}
		}
	}
	s.spare = batch
	if dropped > 0 && s.opts.Log != nil {
		s.opts.Log.Warn("audit lines dropped: the audit output did not keep up (see prism_audit_lines_dropped_total)",
			"output", s.name, "dropped", dropped)
	}
}

// writeOut writes whole lines, at most maxChunk bytes at a time when maxChunk is set (a line
// longer than that is written alone).
func (s *Sink) writeOut(b []byte) error {
	for len(b) > 0 {
		n := len(b)
		if s.maxChunk > 0 && n > s.maxChunk {
			if i := bytes.LastIndexByte(b[:s.maxChunk], '\n'); i >= 0 {
				n = i + 1
			} else if i := bytes.IndexByte(b, '\n'); i >= 0 {
				n = i + 1
			}
		}
		if _, err := s.out.Write(b[:n]); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// errCloseTimeout reports a writer that did not finish within Options.CloseTimeout.
var errCloseTimeout = errors.New("audit log: the last lines were not written in time")

// Close writes what the sink holds and closes a file output. Lines that arrive later are dropped
// and counted. Safe on nil and twice.
func (s *Sink) Close() error { return s.CloseInto(nil) }

// CloseInto is Close for a sink that a reload replaces: lines that arrive after it (from calls
// that began before the swap) go to next instead of being dropped.
func (s *Sink) CloseInto(next *Sink) error {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed, s.next = true, next
	s.mu.Unlock()
	close(s.stop)
	timeout := time.NewTimer(s.opts.CloseTimeout)
	defer timeout.Stop()
	select {
	case <-s.done:
		return s.closeErr
	case <-timeout.C:
		return fmt.Errorf("close %s: %w", s.name, errCloseTimeout)
	}
}
