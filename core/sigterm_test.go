package core_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/prism-gateway/plugins/core"
	keyvaluev1 "github.com/prism-gateway/plugins/gen/prism/keyvalue/v1"
	pluginv1 "github.com/prism-gateway/plugins/gen/prism/plugin/v1"
	"github.com/prism-gateway/plugins/internal/binarytest"
)

// childEnv makes the test binary act as a plugin process (core.Run with the probe plugin), so
// the real signal path can be tested without a backend.
const childEnv = "PRISM_CORE_TEST_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "1":
		os.Exit(core.Run(nil, newProbePlugin()))
	case "args": // the command line is the plugin's (probe_test.go)
		os.Exit(core.Run(os.Args[1:], newProbePlugin()))
	}
	os.Exit(m.Run())
}

func TestSIGTERMDrainsInFlightCallsAndExitsZero(t *testing.T) {
	exe, err := os.Executable()
	require.NoError(t, err)
	p := binarytest.Start(t, exe, binarytest.BaseEnv(childEnv+"=1", "PRISM_CONTROL_PLANE_SHUTDOWN_GRACE=10s"))
	p.WaitServing(t, 10*time.Second)

	result := make(chan error, 1)
	var resp *keyvaluev1.GetResponse
	go func() {
		var err error
		resp, err = keyvaluev1.NewKeyValueServiceClient(p.Conn).Get(context.Background(), &keyvaluev1.GetRequest{Id: "slow"})
		result <- err
	}()
	// Wait until the server counts the call in flight before signalling.
	require.Eventually(t, func() bool {
		m, err := pluginv1.NewPluginServiceClient(p.Conn).GetMetrics(t.Context(), &pluginv1.GetMetricsRequest{})
		return err == nil && strings.Contains(m.GetText(), `prism_grpc_server_in_flight{grpc_method="Get",grpc_service="prism.keyvalue.v1.KeyValueService"} 1`)
	}, 5*time.Second, 10*time.Millisecond)

	p.Signal(t, binarytest.SIGTERM)
	require.NoError(t, <-result, "the in-flight call completes during the drain")
	assert.True(t, resp.GetFound())
	assert.Equal(t, 0, p.Wait(t, 10*time.Second), p.Stderr())
	assert.Contains(t, p.Stderr(), `"msg":"plugin stopped","plugin":"probe","cut_off_calls":0`)
}
