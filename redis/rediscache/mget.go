package rediscache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// MGet streams the raw RESP reply of MGET into one buffer (go-redis's RawWriteToCmd) and hands
// protobuf sub-slices of it. go-redis's parsed MGET allocates a string per value and boxes each
// into an interface of a []any; here a call allocates one reply buffer, sized from the values
// earlier calls read, and the result entries, whatever the number of keys.

// rawMGet runs the commands of one MGet (one per slot group in cluster mode) with a reply buffer
// each. go-redis never sends a command that writes to an io.Writer twice (the second reply would
// follow the first's remains), so the whole attempt is repeated here, with fresh buffers, after
// an error that is not Redis's answer: up to max_retries times, while the context lasts. MGET and
// GET only read, so a repeat is safe.
func (s *store) rawMGet(ctx context.Context, groups [][]string, get []bool) ([]*replyBuffer, error) {
	retries := 0
	switch c := s.client.(type) {
	case *redis.Client:
		retries = c.Options().MaxRetries
	case *redis.ClusterClient:
		retries = c.Options().MaxRetries
	}
	hint := int(s.mgetKeyBytes.Load())
	for attempt := 0; ; attempt++ {
		bufs := make([]*replyBuffer, len(groups))
		var err error
		if len(groups) == 1 {
			bufs[0] = newReplyBuffer(hint * len(groups[0]))
			err = s.client.Process(ctx, redis.NewRawWriteToCmd(ctx, bufs[0], mgetArgs(groups[0], get[0])...))
		} else {
			pipe := s.client.Pipeline()
			for i, keys := range groups {
				bufs[i] = newReplyBuffer(hint * len(keys))
				_ = pipe.Process(ctx, redis.NewRawWriteToCmd(ctx, bufs[i], mgetArgs(keys, get[i])...))
			}
			_, err = pipe.Exec(ctx)
		}
		if err == nil {
			n, size := 0, 0
			for _, keys := range groups {
				n += len(keys)
			}
			for _, b := range bufs {
				size += len(b.b)
			}
			if n > 0 {
				s.mgetKeyBytes.Store(int64(size/n + 1))
			}
			return bufs, nil
		}
		if attempt >= retries || ctx.Err() != nil {
			return nil, err
		}
	}
}

// replyBuffer collects one raw reply. Bulk strings arrive through ReadFrom with their exact
// length, and are read straight into the buffer.
type replyBuffer struct{ b []byte }

func newReplyBuffer(hint int) *replyBuffer {
	return &replyBuffer{b: make([]byte, 0, max(hint, 512))}
}

// Write implements io.Writer.
func (w *replyBuffer) Write(p []byte) (int, error) {
	w.grow(len(p))
	w.b = append(w.b, p...)
	return len(p), nil
}

// ReadFrom implements io.ReaderFrom for io.CopyN, which go-redis copies a bulk string with.
func (w *replyBuffer) ReadFrom(r io.Reader) (int64, error) {
	if lr, ok := r.(*io.LimitedReader); ok {
		n := int(lr.N)
		w.grow(n)
		start := len(w.b)
		w.b = w.b[:start+n]
		m, err := io.ReadFull(lr, w.b[start:])
		w.b = w.b[:start+m]
		return int64(m), err
	}
	var total int64
	for {
		w.grow(512)
		m, err := r.Read(w.b[len(w.b):cap(w.b)])
		w.b = w.b[:len(w.b)+m]
		total += int64(m)
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// grow makes room for n more bytes, doubling (append grows large slices by only a quarter).
func (w *replyBuffer) grow(n int) {
	if cap(w.b)-len(w.b) >= n {
		return
	}
	b := make([]byte, len(w.b), max(2*cap(w.b), len(w.b)+n))
	copy(b, w.b)
	w.b = b
}

// mgetArgs are the arguments of MGET keys..., or of GET key when get is set.
func mgetArgs(keys []string, get bool) []any {
	args := make([]any, 1, len(keys)+1)
	args[0] = "mget"
	if get {
		args[0] = "get"
	}
	for _, k := range keys {
		args = append(args, k)
	}
	return args
}

// errRESP is a reply this parser does not expect from GET or MGET.
var errRESP = errors.New("unexpected RESP reply")

// replyError is an error reply of Redis (NOPERM, WRONGTYPE, MOVED...), kept as the text
// backendError and redirected look at.
type replyError string

func (e replyError) Error() string { return string(e) }

// parseValues fills out from the raw reply of GET (one value) or MGET (an array of values): a
// value at out[idx[i]] (out[i] when idx is nil), views into raw, never copies.
func parseValues(raw []byte, out []mgetEntry, idx []int) error {
	want := len(out)
	if idx != nil {
		want = len(idx)
	}
	pos := 0
	n := 1
	if len(raw) > 0 && raw[0] == '*' {
		line, next, err := respLine(raw, 0)
		if err != nil {
			return err
		}
		if n, err = strconv.Atoi(string(line[1:])); err != nil {
			return fmt.Errorf("%w: array header %q", errRESP, line)
		}
		pos = next
	}
	if n != want {
		return fmt.Errorf("MGET answered %d values for %d keys", n, want)
	}
	for i := range n {
		e, next, err := parseValue(raw, pos)
		if err != nil {
			return err
		}
		pos = next
		at := i
		if i < len(idx) { // idx, when given, has n entries
			at = idx[i]
		}
		if at >= len(out) {
			return fmt.Errorf("MGET value %d has no place among %d keys", i, len(out))
		}
		out[at] = e
	}
	if pos != len(raw) {
		return fmt.Errorf("%w: %d bytes after the last value", errRESP, len(raw)-pos)
	}
	return nil
}

// parseValue reads one bulk string or null at raw[pos:] and returns the position after it.
func parseValue(raw []byte, pos int) (mgetEntry, int, error) {
	line, next, err := respLine(raw, pos)
	if err != nil {
		return mgetEntry{}, 0, err
	}
	switch line[0] {
	case '_': // RESP3 null
		return mgetEntry{}, next, nil
	case '$':
		n, err := strconv.Atoi(string(line[1:]))
		if err != nil {
			return mgetEntry{}, 0, fmt.Errorf("%w: bulk header %q", errRESP, line)
		}
		if n < 0 { // RESP2 null
			return mgetEntry{}, next, nil
		}
		end := next + n
		if end+2 > len(raw) || raw[end] != '\r' || raw[end+1] != '\n' {
			return mgetEntry{}, 0, fmt.Errorf("%w: bulk string of %d bytes cut short", errRESP, n)
		}
		// Capped, so nothing appended to a value could reach the next one.
		return mgetEntry{found: true, value: raw[next:end:end]}, end + 2, nil
	case '-':
		return mgetEntry{}, 0, replyError(line[1:])
	case '!':
		// RESP3 blob error: !<len>\r\n<text>\r\n
		n, err := strconv.Atoi(string(line[1:]))
		if err != nil || next+n > len(raw) {
			return mgetEntry{}, 0, fmt.Errorf("%w: blob error header %q", errRESP, line)
		}
		return mgetEntry{}, 0, replyError(raw[next : next+n])
	}
	return mgetEntry{}, 0, fmt.Errorf("%w: type %q", errRESP, line[0])
}

// respLine is the line at raw[pos:] without its CRLF, and the position after it.
func respLine(raw []byte, pos int) ([]byte, int, error) {
	for i := pos; i+1 < len(raw); i++ {
		if raw[i] == '\r' && raw[i+1] == '\n' {
			if i == pos {
				return nil, 0, fmt.Errorf("%w: empty line", errRESP)
			}
			return raw[pos:i], i + 2, nil
		}
	}
	return nil, 0, fmt.Errorf("%w: line not ended", errRESP)
}
