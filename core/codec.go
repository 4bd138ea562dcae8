package core

import (
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// requestCodec is the server's codec: protobuf, except that a request with invalid UTF-8 in a
// string field becomes the caller's INVALID_ARGUMENT naming the field. grpc-go turns any codec
// error into INTERNAL before interceptors run, so the codec accepts such a message, notes which
// field was bad, and the interceptors reject the call (logged and counted like any rejection).
//
// It also brings its own buffers. grpc-go's proto codec takes them from a pool whose classes jump
// from 32 KiB to 1 MiB and zeroes each one whole before use, so every 33 KiB–1 MiB message paid
// for clearing 1 MiB (up to 41 % of a plugin's CPU on 64 KiB Gets). This codec's classes are at
// most 25 % larger than the message, and nothing is cleared: marshalling or copying a request in
// overwrites every byte handed out.
type requestCodec struct {
	proto encoding.CodecV2
	pool  *sizedPool
	bad   badUTF8
}

func newRequestCodec() *requestCodec {
	return &requestCodec{proto: encoding.GetCodecV2("proto"), pool: newSizedPool()}
}

func (c *requestCodec) Name() string { return c.proto.Name() }

func (c *requestCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return c.proto.Marshal(v)
	}
	// UseCachedSize reuses the sizes proto.Size just computed; the message is not changed between.
	opts := proto.MarshalOptions{UseCachedSize: true}
	size := proto.Size(m)
	if mem.IsBelowBufferPoolingThreshold(size) {
		b, err := opts.Marshal(m)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	buf := c.pool.Get(size)
	b, err := opts.MarshalAppend((*buf)[:0], m)
	if err != nil {
		c.pool.Put(buf)
		return nil, err
	}
	if len(b) != size || &b[0] != &(*buf)[0] {
		// The message changed size after all and protobuf grew a slice of its own.
		c.pool.Put(buf)
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	return mem.BufferSlice{mem.NewBuffer(buf, c.pool)}, nil
}

func (c *requestCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return c.proto.Unmarshal(data, v)
	}
	// A request that arrived in several frames is joined in one of the codec's buffers; protobuf
	// copies what it keeps, so the buffer goes back to the pool right after.
	buf := data.MaterializeToBuffer(c.pool)
	defer buf.Free()
	wire := buf.ReadOnlyData()
	err := proto.Unmarshal(wire, m)
	if err == nil || !strings.Contains(err.Error(), "invalid UTF-8") {
		return err
	}
	field := invalidUTF8Field(wire, m.ProtoReflect().Descriptor())
	if field == "" {
		return err
	}
	c.bad.note(m, field)
	return nil
}

// sizedPool is a mem.BufferPool of byte slices in size classes four to each power of two, from
// 1 KiB to 64 MiB, handed out dirty. Only a caller that overwrites all len bytes may use it.
type sizedPool struct {
	sizes   []int
	classes []sync.Pool // of *[]byte with cap == sizes[i]
}

func newSizedPool() *sizedPool {
	p := &sizedPool{}
	for size := 1 << 10; size <= 64<<20; size *= 2 {
		for step := range 4 {
			p.sizes = append(p.sizes, size+step*size/4)
		}
	}
	p.classes = make([]sync.Pool, len(p.sizes))
	return p
}

// Get returns a slice of length n whose bytes hold whatever its last user left there.
func (p *sizedPool) Get(n int) *[]byte {
	i, _ := slices.BinarySearch(p.sizes, n)
	if i == len(p.sizes) {
		b := make([]byte, n)
		return &b
	}
	if b, ok := p.classes[i].Get().(*[]byte); ok {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, p.sizes[i])
	return &b
}

// Put keeps a slice that Get handed out; anything else is left to the garbage collector.
func (p *sizedPool) Put(b *[]byte) {
	if i, ok := slices.BinarySearch(p.sizes, cap(*b)); ok {
		p.classes[i].Put(b)
	}
}

// badUTF8 holds the bad field of each message the codec accepted only to have it rejected. The
// pending count keeps the check free for every other message.
type badUTF8 struct {
	pending atomic.Int64
	fields  sync.Map // proto.Message -> field path
}

func (b *badUTF8) note(m proto.Message, field string) {
	b.fields.Store(m, field)
	b.pending.Add(1)
}

// take returns and forgets the bad field noted for m, if any.
func (b *badUTF8) take(m any) (string, bool) {
	if b.pending.Load() == 0 {
		return "", false
	}
	v, ok := b.fields.LoadAndDelete(m)
	if !ok {
		return "", false
	}
	b.pending.Add(-1)
	return v.(string), true
}

// invalidUTF8Field walks a message's wire bytes and returns the path of the first string field
// that is not valid UTF-8 (e.g. "records[2].headers[0].key"), or "" if it finds none.
func invalidUTF8Field(b []byte, md protoreflect.MessageDescriptor) string {
	seen := map[protowire.Number]int{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return ""
		}
		b = b[n:]
		fd := md.Fields().ByNumber(num)
		if typ != protowire.BytesType || fd == nil {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return ""
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return ""
		}
		b = b[n:]
		name := string(fd.Name())
		if fd.IsList() {
			name += "[" + strconv.Itoa(seen[num]) + "]"
			seen[num]++
		}
		switch {
		case fd.Kind() == protoreflect.StringKind && !utf8.Valid(v):
			return name
		case fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind:
			if inner := invalidUTF8Field(v, fd.Message()); inner != "" {
				return name + "." + inner
			}
		}
	}
	return ""
}
