// Package advertised reads the limits a plugin advertises in GetInfo, so the conformance suites
// probe each bound at the value the running plugin enforces instead of a copy of its defaults.
package advertised

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"

	pluginv1 "github.com/prism-gateway/plugins/gen/prism/plugin/v1"
)

// Fill sets every zero limit in fields to the integer capability of the same key, failing the
// test when the plugin does not advertise one: a suite must never guess a limit.
func Fill(tb testing.TB, conn grpc.ClientConnInterface, fields map[string]*int) {
	tb.Helper()
	info, err := pluginv1.NewPluginServiceClient(conn).GetInfo(tb.Context(), &pluginv1.GetInfoRequest{})
	require.NoError(tb, err, "GetInfo, for the advertised limits")
	caps := info.GetCapabilities()
	for key, v := range fields {
		if *v != 0 {
			continue
		}
		s, ok := caps[key]
		require.True(tb, ok, "the plugin advertises no %q capability; set the limit in the suite's Options", key)
		n, err := strconv.Atoi(s)
		require.NoError(tb, err, "capability %q", key)
		*v = n
	}
}
