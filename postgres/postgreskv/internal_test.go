package postgreskv

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/prism-gateway/plugins/core/apierr"
	keyvaluev1 "github.com/prism-gateway/plugins/gen/prism/keyvalue/v1"
)

func TestPageTokensRoundTripAndRejectTampering(t *testing.T) {
	t.Parallel()
	tokens := pageTokens{key: []byte("0123456789abcdef0123456789abcdef")}
	bind := binding('s', []byte("ns"), []byte("prefix"))
	pos := position{id: []byte("rec\x00ord"), key: []byte{0x00, 0xff}}
	tok := tokens.mint(bind, pos)
	got, err := tokens.open(bind, tok)
	require.NoError(t, err)
	assert.Equal(t, pos, got)

	other := pageTokens{key: []byte("another key, another deployment")}
	cases := []struct {
		name string
		open func() error
	}{
		{"signed with another key", func() error { _, err := other.open(bind, tok); return err }},
		{"bound to another request", func() error {
			_, err := tokens.open(binding('s', []byte("ns"), []byte("other")), tok)
			return err
		}},
		{"empty", func() error { _, err := tokens.open(bind, ""); return err }},
		{"not base64", func() error { _, err := tokens.open(bind, "%%%"); return err }},
		{"truncated", func() error { _, err := tokens.open(bind, tok[:len(tok)-2]); return err }},
		{"extended", func() error { _, err := tokens.open(bind, tok+"AA"); return err }},
	}
	for i := range tok {
		b := []byte(tok)
		if b[i] == 'x' {
			b[i] = 'y'
		} else {
			b[i] = 'x'
		}
		changed := string(b)
		cases = append(cases, struct {
			name string
			open func() error
		}{"changed at " + string(rune('0'+i%10)), func() error { _, err := tokens.open(bind, changed); return err }})
	}
	for _, tc := range cases {
		assert.ErrorIs(t, tc.open(), errBadToken, tc.name)
	}
}

func TestPrefixEnd(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		prefix []byte
		want   []byte
	}{
		{"plain ASCII", []byte("ab"), []byte("ac")},
		{"trailing 0xff carries", []byte{'a', 0xff, 0xff}, []byte{'b'}},
		{"all 0xff has no end", []byte{0xff, 0xff}, nil},
		{"multi-byte UTF-8", []byte("a\u00ff"), []byte{'a', 0xc3, 0xc0}},
	}
	for _, tc := range cases {
		assert.Equal(t, tc.want, prefixEnd(tc.prefix), tc.name)
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		backend func(b *BackendConfig)
		limits  func(l *LimitsConfig)
		want    string
	}{
		{"defaults are valid", nil, nil, ""},
		{"pool size zero", func(b *BackendConfig) { b.PoolSize = 0 }, nil, "pool_size: must be between 1 and 1000, got 0"},
		{"unknown ssl mode", func(b *BackendConfig) { b.SSLMode = "prefer-maybe" }, nil, "ssl_mode"},
		{"verify-full without a CA", func(b *BackendConfig) { b.SSLMode = "verify-full" }, nil, "tls_ca_file: required when ssl_mode is verify-full"},
		{"certificate without key", func(b *BackendConfig) { b.SSLMode = "require"; b.TLSCertFile = "c.pem" }, nil, "set both or neither"},
		{"tls files without a mode", func(b *BackendConfig) { b.TLSCAFile = "ca.pem" }, nil, "ssl_mode: required"},
		{"retention under a second", func(b *BackendConfig) { b.IdempotencyRetention = time.Millisecond }, nil, "idempotency_retention"},
		{"short page token key", func(b *BackendConfig) { b.PageTokenKey = "short" }, nil, "page_token_key"},
		{"unknown credentials source", func(b *BackendConfig) { b.Credentials.Source = "env" }, nil, "credentials.source: must be static, file or vault"},
		{"file credentials without a path", func(b *BackendConfig) { b.Credentials.Source = "file" }, nil, "credentials.file.path: required"},
		{"vault database credentials without a role", func(b *BackendConfig) {
			b.Credentials.Source, b.Credentials.Vault.Secret.Kind = "vault", "database"
		}, nil, "credentials.vault.secret.role: required"},
		{"bad namespace pattern", nil, func(l *LimitsConfig) { l.NamespacePattern = "([" }, "namespace_pattern"},
		{"default page size over the max", nil, func(l *LimitsConfig) { l.DefaultPageSize = 2000 }, "default_page_size"},
		{"request smaller than one value", nil, func(l *LimitsConfig) { l.MaxRequestBytes = 10 }, "max_request_bytes"},
		{"negative max ttl", nil, func(l *LimitsConfig) { l.MaxTTL = -time.Second }, "max_ttl"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, l := defaultBackend(), DefaultLimits()
			if tc.backend != nil {
				tc.backend(b)
			}
			if tc.limits != nil {
				tc.limits(l)
			}
			var msgs []string
			for _, err := range []error{b.Validate(), l.Validate()} {
				if err != nil {
					msgs = append(msgs, err.Error())
				}
			}
			got := strings.Join(msgs, "\n")
			if tc.want == "" {
				assert.Empty(t, got)
				return
			}
			assert.Contains(t, got, tc.want)
		})
	}
}

// The largest Put the limits allow and the largest page they let the plugin return, built as
// real messages, fit the gRPC message size the plugin sets from the limits.
func TestDefaultLimitsFitTheMessageSize(t *testing.T) {
	t.Parallel()
	l := DefaultLimits()
	require.NoError(t, l.Validate())
	namespace := "n" + strings.Repeat("x", 63)
	id := strings.Repeat("i", l.MaxIDBytes)
	key := func(i int) []byte { return fmt.Appendf(nil, "%0*d", l.MaxKeyBytes, i) }
	expire := timestamppb.New(time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC))

	// Put: the most items, the longest keys, values filling max_request_bytes, every option set.
	put := &keyvaluev1.PutRequest{Namespace: namespace, Id: id,
		IdempotencyToken: strings.Repeat("t", l.MaxIdempotencyTokenBytes)}
	valueBytes := l.MaxRequestBytes/l.MaxItemsPerRequest - l.MaxKeyBytes
	for i := range l.MaxItemsPerRequest {
		put.Items = append(put.Items, &keyvaluev1.PutItem{Key: key(i), Value: make([]byte, valueBytes),
			Ttl: durationpb.New(apierr.MaxTTL)})
	}
	for i := range l.MaxPreconditions {
		put.Preconditions = append(put.Preconditions, &keyvaluev1.Precondition{Key: key(i),
			Condition: &keyvaluev1.Precondition_Version{Version: math.MaxInt64}})
	}

	// Pages: max_page_bytes of items and then one more item of the largest size (a page ends
	// after the item that crosses the budget), each record with the longest id for Scan.
	item := func(i, size int) *keyvaluev1.Item {
		return &keyvaluev1.Item{Key: key(i), Value: make([]byte, size), Version: math.MaxInt64, ExpireTime: expire}
	}
	token := strings.Repeat("p", 512)
	get := &keyvaluev1.GetResponse{Found: true, NextPageToken: token}
	scan := &keyvaluev1.ScanResponse{NextPageToken: token}
	perItem := l.MaxPageBytes / (l.MaxPageSize - 1)
	for i := range l.MaxPageSize - 1 {
		get.Items = append(get.Items, item(i, perItem-l.MaxKeyBytes))
		scan.Records = append(scan.Records, &keyvaluev1.Record{Id: fmt.Sprintf("%0*d", l.MaxIDBytes, i),
			Items: []*keyvaluev1.Item{item(i, perItem-l.MaxKeyBytes)}})
	}
	get.Items = append(get.Items, item(l.MaxPageSize, l.MaxValueBytes))
	scan.Records = append(scan.Records, &keyvaluev1.Record{Id: id, Items: []*keyvaluev1.Item{item(l.MaxPageSize, l.MaxValueBytes)}})

	for name, m := range map[string]proto.Message{"Put request": put, "Get page": get, "Scan page": scan} {
		assert.LessOrEqual(t, proto.Size(m), l.messageBytes(), "the largest %s within the limits", name)
	}
}
