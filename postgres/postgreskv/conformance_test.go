package postgreskv_test

import (
	"testing"

	"github.com/prism-gateway/plugins/conformance/keyvaluetest"
)

func TestConformancePassword(t *testing.T) {
	t.Parallel()
	r := startPlugin(t, newDatabase(t), "backend:\n  purge_interval: 200ms\n")
	keyvaluetest.Run(t, r.Conn, keyvaluetest.Options{})
}
