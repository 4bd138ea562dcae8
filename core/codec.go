package core

import (
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
type requestCodec struct {
	proto encoding.CodecV2
	bad   badUTF8
}

func newRequestCodec() *requestCodec {
	return &requestCodec{proto: encoding.GetCodecV2("proto")}
}

func (c *requestCodec) Name() string { return c.proto.Name() }

func (c *requestCodec) Marshal(v any) (mem.BufferSlice, error) { return c.proto.Marshal(v) }

func (c *requestCodec) Unmarshal(data mem.BufferSlice, v any) error {
	err := c.proto.Unmarshal(data, v)
	if err == nil || !strings.Contains(err.Error(), "invalid UTF-8") {
		return err
	}
	m, ok := v.(proto.Message)
	if !ok {
		return err
	}
	field := invalidUTF8Field(data.Materialize(), m.ProtoReflect().Descriptor())
	if field == "" {
		return err
	}
	c.bad.note(m, field)
	return nil
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
