package main

import (
	"strings"
	"testing"

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
