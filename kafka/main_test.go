package main

import (
	"strings"
	"testing"

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
