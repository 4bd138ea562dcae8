package core

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"google.golang.org/protobuf/encoding/protowire"

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
