package audit

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// stuckWriter blocks every Write until release is closed, like a disk or pipe that stalls.
type stuckWriter struct {
	entered chan struct{} // receives when a Write begins
	release chan struct{}
	mu      sync.Mutex
	buf     bytes.Buffer
}

func newStuckWriter() *stuckWriter {
	return &stuckWriter{entered: make(chan struct{}, 1), release: make(chan struct{})}
}

func (w *stuckWriter) Write(p []byte) (int, error) {
	select {
	case w.entered <- struct{}{}:
	default:
	}
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *stuckWriter) lines() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Count(w.buf.String(), "\n")
}

// syncBuffer is a log sink for the sink's reports.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func testEvent(id string) *Event {
	return &Event{Time: time.Unix(0, 0), Kind: KindCall, RequestID: id, Identity: "tester", Method: "/m", Code: "OK"}
}

func TestAFullBufferDropsLinesWithoutBlockingCalls(t *testing.T) {
	w := newStuckWriter()
	logs := &syncBuffer{}
	stats := &Stats{}
	lineLen := len(testEvent("0000").AppendJSON(nil))
	const room = 10 // lines that fit in the buffer while the writer is stuck
	s := newSink(w, nil, "stuck", 0, Options{
		FlushInterval: time.Hour, FlushBytes: 1, MaxBuffered: room * lineLen,
		Stats: stats, Log: slog.New(slog.NewJSONHandler(logs, nil)),
	})
	s.Write(testEvent("0000")) // wakes the writer, which takes this line and sticks in Write
	select {
	case <-w.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the writer never started writing")
	}

	const calls = 50
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i <= calls; i++ {
			s.Write(testEvent(fmt.Sprintf("%04d", i)))
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Write blocked on a stuck output")
	}
	assert.Equal(t, uint64(calls-room), stats.Dropped(), "every line beyond the buffer's room is dropped and counted")

	close(w.release)
	require.NoError(t, s.Close())
	assert.Equal(t, 1+room, w.lines(), "the lines that fitted are written once the output moves again")
	assert.Contains(t, logs.String(), "audit lines dropped")
	assert.Contains(t, logs.String(), fmt.Sprintf(`"dropped":%d`, calls-room))
	t.Logf("stuck output: %d lines written, %d dropped", w.lines(), stats.Dropped())
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("no space left on device") }

func TestAFailedWriteCountsItsLinesAndIsLogged(t *testing.T) {
	logs := &syncBuffer{}
	stats := &Stats{}
	s := newSink(failingWriter{}, nil, "/var/log/prism/audit.log", 0, Options{
		FlushInterval: time.Hour, Stats: stats, Log: slog.New(slog.NewJSONHandler(logs, nil)),
	})
	for i := range 3 {
		s.Write(testEvent(fmt.Sprint(i)))
	}
	require.NoError(t, s.Close())
	assert.Equal(t, uint64(3), stats.Dropped())
	assert.Equal(t, uint64(1), stats.WriteErrors())
	assert.Contains(t, logs.String(), "audit log write failed")
	assert.Contains(t, logs.String(), "no space left on device")
}

// recordingWriter keeps each Write separately.
type recordingWriter struct {
	mu     sync.Mutex
	writes []string
}

func (w *recordingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = append(w.writes, string(p))
	return len(p), nil
}

func TestWritesToAPipeEndAtLineEndsWithinTheAtomicSize(t *testing.T) {
	w := &recordingWriter{}
	s := newSink(w, nil, "stderr", pipeBuf, Options{FlushInterval: time.Hour})
	long := strings.Repeat("y", pipeBuf+100)
	for i := range 200 {
		e := testEvent(fmt.Sprint(i))
		if i == 100 {
			e.Error = long
		}
		s.Write(e)
	}
	require.NoError(t, s.Close())
	require.Greater(t, len(w.writes), 1)
	total := 0
	for _, wr := range w.writes {
		assert.True(t, strings.HasSuffix(wr, "\n"), "each write ends a line")
		if len(wr) > pipeBuf {
			assert.Equal(t, 1, strings.Count(wr, "\n"), "only a line too long for one atomic write is written alone")
		}
		total += strings.Count(wr, "\n")
	}
	assert.Equal(t, 200, total)
}

// closeRecorder reports when the sink closes its output.
type closeRecorder struct{ closed chan struct{} }

func (c closeRecorder) Close() error {
	close(c.closed)
	return nil
}

func TestCloseGivesUpOnAStuckOutputWhichIsClosedOnceItMoves(t *testing.T) {
	w := newStuckWriter()
	c := closeRecorder{closed: make(chan struct{})}
	s := newSink(w, c, "stuck", 0, Options{FlushInterval: time.Hour, CloseTimeout: 50 * time.Millisecond})
	s.Write(testEvent("x"))
	require.ErrorIs(t, s.Close(), errCloseTimeout, "shutdown is not held up by an output that never drains")
	close(w.release)
	select {
	case <-c.closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the output was never closed")
	}
	assert.Equal(t, 1, w.lines(), "the last line was written once the output moved")
}
