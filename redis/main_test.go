package main

import (
	"testing"

	"github.com/prism-gateway/plugins/internal/binarytest"
	"github.com/prism-gateway/plugins/internal/testsvc"
)

func TestBinaryAcceptance(t *testing.T) {
	const wrong = "wrong-redis-password"
	addr := "REDIS_ADDRESS=" + testsvc.RedisAddr(t)
	user := "REDIS_USERNAME=" + testsvc.User
	binarytest.Acceptance(t, binarytest.Spec{
		Dir:        ".",
		Env:        []string{addr, user, "REDIS_PASSWORD=" + testsvc.Password},
		WrongEnv:   []string{addr, user, "REDIS_PASSWORD=" + wrong},
		Secrets:    []string{wrong},
		Services:   []string{"prism.cache.v1.CacheService"},
		FailureLog: "WRONGPASS",
	})
}
