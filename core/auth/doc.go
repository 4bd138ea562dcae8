// Package auth decides who a caller is and what it may do (DESIGN §4, RFC-011 inbound).
//
// Identity comes from the mTLS client certificate (its SPIFFE URI SAN, else its first DNS SAN,
// else its subject CN) or from a bearer JWT in the authorization metadata, verified against a
// JWKS file with a configured issuer and audience (identity = the token's sub). When a request
// carries both, a valid token wins: the certificate names the workload that connects (often a
// gateway or sidecar shared by many callers), the token the caller it acts for. A token that is
// present but not valid is refused even when the certificate alone would do.
//
// Policies grant identity globs a set of operations on namespace (or topic) globs. Globs are
// compiled once, when the configuration is loaded, so a decision is a few string comparisons and
// does not allocate when the call is allowed.
//
// JWT library: github.com/go-jose/go-jose/v4. It is the JOSE implementation already in this
// module's dependency graph, verifies JWKS key sets by kid out of the box, and makes callers
// list the accepted signature algorithms, which rules out alg=none and key-confusion tokens.
package auth
