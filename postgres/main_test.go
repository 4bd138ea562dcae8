package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/prism-gateway/plugins/internal/binarytest"
	"github.com/prism-gateway/plugins/internal/testsvc"
)

func TestBinaryAcceptance(t *testing.T) {
	const wrong = "wrong-pg-password"
	url := testsvc.PostgresURL(t)
	binarytest.Acceptance(t, binarytest.Spec{
		Dir:        ".",
		Env:        []string{"DATABASE_URL=" + url},
		WrongEnv:   []string{"DATABASE_URL=" + strings.Replace(url, ":"+testsvc.Password+"@", ":"+wrong+"@", 1)},
		Secrets:    []string{":" + testsvc.Password + "@", wrong},
		Services:   []string{"prism.keyvalue.v1.KeyValueService"},
		FailureLog: "password authentication failed",
	})
}

// TestCheckConfigShowsTheCredentialsSourceNeverItsSecrets configures the vault source from the
// environment alone: --check-config shows where the credentials come from, redacts the token,
// and names the key of a missing setting.
func TestCheckConfigShowsTheCredentialsSourceNeverItsSecrets(t *testing.T) {
	const token = "s.check-config-token-not-for-printing"
	bin := binarytest.Build(t, ".")
	env := binarytest.BaseEnv(
		"DATABASE_URL=postgres://prism@db.internal:5432/prism",
		"PRISM_BACKEND_CREDENTIALS_SOURCE=vault",
		"PRISM_BACKEND_CREDENTIALS_VAULT_ADDRESS=https://vault.internal:8200",
		"PRISM_BACKEND_CREDENTIALS_VAULT_AUTH_TOKEN="+token,
		"PRISM_BACKEND_CREDENTIALS_VAULT_SECRET_KIND=database",
	)
	code, _, stderr := binarytest.Run(t, bin, env, "--check-config")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "backend.credentials.vault.secret.role: required when vault.secret.kind is database")

	code, stdout, stderr := binarytest.Run(t, bin, append(env, "PRISM_BACKEND_CREDENTIALS_VAULT_SECRET_ROLE=prism-postgres"), "--check-config")
	require.Equal(t, 0, code, stderr)
	for _, want := range []string{"source: vault", "address: https://vault.internal:8200", "kind: database", "role: prism-postgres", "token: '[REDACTED]'"} {
		assert.Contains(t, stdout, want)
	}
	assert.NotContains(t, stdout+stderr, token)
}
