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
	const wrong = "wrong-kafka-password"
	brokers := "KAFKA_BROKERS=" + strings.Join(testsvc.KafkaSASLBrokers(t), ",")
	user := "KAFKA_SASL_USERNAME=" + testsvc.User
	binarytest.Acceptance(t, binarytest.Spec{
		Dir:        ".",
		Env:        []string{brokers, user, "KAFKA_SASL_PASSWORD=" + testsvc.Password},
		WrongEnv:   []string{brokers, user, "KAFKA_SASL_PASSWORD=" + wrong},
		Secrets:    []string{wrong},
		Services:   []string{"prism.stream.v1.StreamService"},
		FailureLog: "SASL_AUTHENTICATION_FAILED",
	})
}

// TestCheckConfigShowsTheCredentialsSourceNeverItsSecrets configures the vault source from the
// environment alone: --check-config names a missing key, then shows where the credentials come
// from with the token redacted. The shipped config.yaml passes as it is.
func TestCheckConfigShowsTheCredentialsSourceNeverItsSecrets(t *testing.T) {
	const token = "s.kafka-check-config-token-not-for-printing"
	bin := binarytest.Build(t, ".")
	env := binarytest.BaseEnv(
		"KAFKA_BROKERS=kafka.internal:9093",
		"PRISM_BACKEND_CREDENTIALS_SOURCE=vault",
		"PRISM_BACKEND_CREDENTIALS_VAULT_ADDRESS=https://vault.internal:8200",
		"PRISM_BACKEND_CREDENTIALS_VAULT_AUTH_TOKEN="+token,
	)
	code, _, stderr := binarytest.Run(t, bin, env, "--check-config")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "backend.credentials.vault.secret.path: required when vault.secret.kind is kv")

	code, stdout, stderr := binarytest.Run(t, bin, append(env, "PRISM_BACKEND_CREDENTIALS_VAULT_SECRET_PATH=prism/kafka"), "--check-config")
	require.Equal(t, 0, code, stderr)
	for _, want := range []string{"source: vault", "address: https://vault.internal:8200", "path: prism/kafka", "token: '[REDACTED]'"} {
		assert.Contains(t, stdout, want)
	}
	assert.NotContains(t, stdout+stderr, token)

	code, _, stderr = binarytest.Run(t, bin, binarytest.BaseEnv(), "--config", "config.yaml", "--check-config")
	assert.Equal(t, 0, code, stderr)
}
