package core

import (
	"bytes"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	cachev1 "github.com/prism-gateway/plugins/gen/prism/cache/v1"
	streamv1 "github.com/prism-gateway/plugins/gen/prism/stream/v1"
)

func field(num protowire.Number, v []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), v)
}

func TestInvalidUTF8FieldNamesThePath(t *testing.T) {
	t.Parallel()
	md := (&streamv1.PublishRequest{}).ProtoReflect().Descriptor()
	header := func(key []byte) []byte { return field(1, key) } // Header.key
	record := func(headers ...[]byte) []byte {                 // Record.headers = 3
		var b []byte
		for _, h := range headers {
			b = append(b, field(3, h)...)
		}
		return b
	}
	cases := []struct {
		name string
		wire []byte
		want string
	}{
		{"top-level string", field(1, []byte{0xff, 0xfe}), "topic"},
		{"nested in the second record's first header", append(append(field(1, []byte("t")),
			field(2, record(header([]byte("ok"))))...),
			field(2, record(header([]byte{0xc3}), header([]byte("fine"))))...), "records[1].headers[0].key"},
		{"bytes fields may hold anything", field(2, field(2, []byte{0xff})), ""},
		{"all valid", field(1, []byte("topic")), ""},
		{"truncated input", []byte{0x0a, 0x05, 'a'}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, tc.want, invalidUTF8Field(tc.wire, md))
		})
	}
}

// chunks splits b into a BufferSlice of pieces of at most n bytes, as HTTP/2 frames arrive.
func chunks(b []byte, n int) mem.BufferSlice {
	var out mem.BufferSlice
	for len(b) > 0 {
		k := min(n, len(b))
		out = append(out, mem.SliceBuffer(b[:k]))
		b = b[k:]
	}
	return out
}

func TestCodecMarshalsLikeProtobufAtEverySize(t *testing.T) {
	t.Parallel()
	c := newRequestCodec()
	for _, tc := range []struct {
		name string
		size int
	}{
		{"empty value", 0},
		{"below the pooling threshold", 900},
		{"just above it", 1100},
		{"64 KiB", 64 << 10},
		{"just above 1 MiB", 1<<20 + 1},
		{"beyond the largest size class", 65 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// Marshal twice with different bytes, so the second may get the first's dirty buffer.
			for _, fill := range []byte{'a', 'b'} {
				msg := &cachev1.GetResponse{Found: true, Value: bytes.Repeat([]byte{fill}, tc.size)}
				want, err := proto.Marshal(msg)
				require.NoError(t, err)
				got, err := c.Marshal(msg)
				require.NoError(t, err)
				assert.Equal(t, want, got.Materialize())
				got.Free()
			}
		})
	}
}

func TestCodecUnmarshalsRequestsSplitAcrossFrames(t *testing.T) {
	t.Parallel()
	c := newRequestCodec()
	entries := make([]*cachev1.MSetEntry, 100)
	for i := range entries {
		entries[i] = &cachev1.MSetEntry{Key: "key-" + strconv.Itoa(i), Value: bytes.Repeat([]byte{byte(i)}, 1<<10)}
	}
	msg := &cachev1.MSetRequest{Namespace: "ns", Entries: entries}
	wire, err := proto.Marshal(msg)
	require.NoError(t, err)
	for _, frame := range []int{len(wire), 16 << 10, 1000} {
		var got cachev1.MSetRequest
		require.NoError(t, c.Unmarshal(chunks(wire, frame), &got))
		assert.True(t, proto.Equal(msg, &got), "frames of %d bytes", frame)
	}

	// Invalid UTF-8 is still noted, not failed, when the request spans frames.
	bad := append(field(1, []byte("t")), field(2, append(field(2, bytes.Repeat([]byte("v"), 40<<10)), field(3, field(1, []byte{0xff}))...))...)
	var req streamv1.PublishRequest
	require.NoError(t, c.Unmarshal(chunks(bad, 16<<10), &req))
	f, ok := c.bad.take(&req)
	assert.True(t, ok)
	assert.Equal(t, "records[0].headers[0].key", f)
}

func TestSizedPoolHandsOutRightSizedSlices(t *testing.T) {
	t.Parallel()
	p := newSizedPool()
	for _, n := range []int{1, 1024, 1025, 33 << 10, 64<<10 + 7, 1<<20 + 1, 64 << 20} {
		b := p.Get(n)
		assert.Len(t, *b, n)
		assert.LessOrEqual(t, cap(*b), max(1024, n+n/4), "a class is at most 25 %% larger than %d", n)
		p.Put(b)
	}
	beyond := p.Get(64<<20 + 1)
	assert.Len(t, *beyond, 64<<20+1, "beyond the classes: a plain slice")
	p.Put(beyond)
	foreign := make([]byte, 3000)
	p.Put(&foreign) // not a class size: dropped, never handed out short
	assert.Len(t, *p.Get(2500), 2500)
}

// BenchmarkMarshalResponse compares grpc-go's proto codec with this one on responses of the
// sizes that mattered in the plugin profiles (-benchmem shows the bytes each one touches).
func BenchmarkMarshalResponse(b *testing.B) {
	mget := &cachev1.MGetResponse{}
	for i := range 100 {
		mget.Entries = append(mget.Entries, &cachev1.Entry{Key: "key-" + strconv.Itoa(i), Found: true, Value: bytes.Repeat([]byte("v"), 1<<10)})
	}
	msgs := []struct {
		name string
		msg  proto.Message
	}{
		{"get=1KiB", &cachev1.GetResponse{Found: true, Value: bytes.Repeat([]byte("v"), 1<<10)}},
		{"get=64KiB", &cachev1.GetResponse{Found: true, Value: bytes.Repeat([]byte("v"), 64<<10)}},
		{"mget=100x1KiB", mget},
		{"get=1MiB", &cachev1.GetResponse{Found: true, Value: bytes.Repeat([]byte("v"), 1<<20)}},
	}
	for _, m := range msgs {
		for _, codec := range []struct {
			name string
			c    encoding.CodecV2
		}{{"grpc", encoding.GetCodecV2("proto")}, {"pooled", newRequestCodec()}} {
			b.Run(m.name+"/codec="+codec.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					out, err := codec.c.Marshal(m.msg)
					if err != nil {
						b.Fatal(err)
					}
					out.Free()
				}
			})
		}
	}
}
