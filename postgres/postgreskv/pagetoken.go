package postgreskv

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"hash"
	"strings"
)

// Page tokens carry the last (id, key) a page returned plus a digest of the request they belong
// to, signed with HMAC-SHA256. Keyset continuation from the last position is what makes a paged
// scan see every item that lives through it exactly once, whatever else is written meanwhile.

const (
	tokenFormat  = 1
	tokenMACLen  = 16
	tokenBindLen = 16
)

// errBadToken is returned for any token that was not minted by a replica sharing the key for the
// same request.
var errBadToken = errors.New("page_token: not a valid page token for this request")

// pageTokens mints and opens page tokens.
type pageTokens struct{ key []byte }

// position is where the next page starts (exclusive).
type position struct {
	id  []byte
	key []byte
}

// binding digests the request fields a token may not be replayed against.
func binding(kind byte, fields ...[]byte) []byte {
	h := sha256.New()
	h.Write([]byte{kind})
	for _, f := range fields {
		writeLenPrefixed(h, f)
	}
	return h.Sum(nil)[:tokenBindLen]
}

func writeLenPrefixed(h hash.Hash, b []byte) {
	var n [binary.MaxVarintLen64]byte
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(b)))])
	h.Write(b)
}

// mint encodes pos for the request identified by bind.
func (t pageTokens) mint(bind []byte, pos position) string {
	buf := make([]byte, 0, 1+tokenBindLen+2*binary.MaxVarintLen64+len(pos.id)+len(pos.key)+tokenMACLen)
	buf = append(buf, tokenFormat)
	buf = append(buf, bind...)
	buf = binary.AppendUvarint(buf, uint64(len(pos.id)))
	buf = append(buf, pos.id...)
	buf = binary.AppendUvarint(buf, uint64(len(pos.key)))
	buf = append(buf, pos.key...)
	buf = append(buf, t.mac(buf)...)
	return base64.RawURLEncoding.EncodeToString(buf)
}

// open checks a token's signature and binding and returns its position.
func (t pageTokens) open(bind []byte, token string) (position, error) {
	// The decoder skips \r and \n even in strict mode: a token with them is not one we minted.
	if strings.ContainsAny(token, "\r\n") {
		return position{}, errBadToken
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(token)
	if err != nil || len(raw) < 1+tokenBindLen+2+tokenMACLen {
		return position{}, errBadToken
	}
	body, mac := raw[:len(raw)-tokenMACLen], raw[len(raw)-tokenMACLen:]
	if !hmac.Equal(mac, t.mac(body)) || body[0] != tokenFormat || !hmac.Equal(body[1:1+tokenBindLen], bind) {
		return position{}, errBadToken
	}
	rest := body[1+tokenBindLen:]
	var pos position
	for _, dst := range []*[]byte{&pos.id, &pos.key} {
		n, k := binary.Uvarint(rest)
		if k <= 0 || uint64(len(rest)-k) < n {
			return position{}, errBadToken
		}
		*dst = rest[k : k+int(n)]
		rest = rest[k+int(n):]
	}
	if len(rest) != 0 {
		return position{}, errBadToken
	}
	return pos, nil
}

func (t pageTokens) mac(b []byte) []byte {
	m := hmac.New(sha256.New, t.key)
	m.Write(b)
	return m.Sum(nil)[:tokenMACLen]
}
