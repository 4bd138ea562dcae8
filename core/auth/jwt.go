package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/prism-gateway/plugins/core/apierr"
	"github.com/prism-gateway/plugins/core/config"
)

// acceptedAlgorithms are the asymmetric JWS algorithms a token may be signed with.
var acceptedAlgorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512, jose.EdDSA,
}

// clockSkew is how far iat, nbf and exp may be off the plugin's clock.
const clockSkew = 30 * time.Second

// maxCachedTokens bounds the cache of verified tokens; it is emptied when full.
const maxCachedTokens = 4096

// JWTVerifier checks bearer tokens against one JWKS file's keys, issuer and audience.
type JWTVerifier struct {
	keys     jose.JSONWebKeySet
	issuer   string
	audience string

	mu    sync.Mutex
	cache map[string]cachedToken // verified tokens, so a signature is checked once per token
}

type cachedToken struct {
	sub    string
	expiry time.Time
}

// LoadJWT reads the JWKS file; nil when JWT is not enabled.
func LoadJWT(cfg config.JWTConfig) (*JWTVerifier, error) {
	if !cfg.Enabled {
		return nil, nil
	}
	data, err := os.ReadFile(cfg.JWKSFile)
	if err != nil {
		return nil, fmt.Errorf("auth.jwt.jwks_file: %w", err)
	}
	v := &JWTVerifier{issuer: cfg.Issuer, audience: cfg.Audience, cache: map[string]cachedToken{}}
	if err := json.Unmarshal(data, &v.keys); err != nil {
		return nil, fmt.Errorf("auth.jwt.jwks_file: not a JSON Web Key Set: %w", err)
	}
	if len(v.keys.Keys) == 0 {
		return nil, errors.New("auth.jwt.jwks_file: no keys")
	}
	return v, nil
}

// Verify returns the subject of a valid token, or UNAUTHENTICATED saying what is wrong with it
// (never the token itself).
func (v *JWTVerifier) Verify(token string, now time.Time) (string, error) {
	v.mu.Lock()
	c, ok := v.cache[token]
	v.mu.Unlock()
	if ok {
		if now.After(c.expiry.Add(clockSkew)) {
			return "", unauthenticated("bearer token has expired")
		}
		return c.sub, nil
	}
	tok, err := jwt.ParseSigned(token, acceptedAlgorithms)
	if err != nil {
		return "", unauthenticated("bearer token is not a signed JWT with an accepted algorithm")
	}
	var claims jwt.Claims
	if err := tok.Claims(v.keys, &claims); err != nil {
		return "", unauthenticated("bearer token signature does not match any key in auth.jwt.jwks_file")
	}
	err = claims.ValidateWithLeeway(jwt.Expected{Issuer: v.issuer, AnyAudience: jwt.Audience{v.audience}, Time: now}, clockSkew)
	switch {
	case errors.Is(err, jwt.ErrExpired):
		return "", unauthenticated("bearer token has expired")
	case errors.Is(err, jwt.ErrInvalidIssuer):
		return "", unauthenticated("bearer token issuer is not auth.jwt.issuer")
	case errors.Is(err, jwt.ErrInvalidAudience):
		return "", unauthenticated("bearer token audience does not include auth.jwt.audience")
	case err != nil:
		return "", unauthenticated("bearer token is not valid yet")
	}
	if claims.Expiry == nil {
		return "", unauthenticated("bearer token has no exp claim")
	}
	if claims.Subject == "" {
		return "", unauthenticated("bearer token has no sub claim")
	}
	v.mu.Lock()
	if len(v.cache) >= maxCachedTokens {
		clear(v.cache)
	}
	v.cache[token] = cachedToken{sub: claims.Subject, expiry: claims.Expiry.Time()}
	v.mu.Unlock()
	return claims.Subject, nil
}

func unauthenticated(msg string) error { return apierr.New(apierr.ErrUnauthenticated, "%s", msg) }
