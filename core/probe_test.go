package core_test

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/durationpb"

	pluginv1 "github.com/prism-gateway/plugins/gen/prism/plugin/v1"
	"github.com/prism-gateway/plugins/internal/binarytest"
)

func TestHealthProbeFlagReportsTheRunningPluginsHealth(t *testing.T) {
	exe, err := os.Executable()
	require.NoError(t, err)
	p := binarytest.Start(t, exe, binarytest.BaseEnv(childEnv+"=1"))
	p.WaitServing(t, 10*time.Second)
	probeEnv := binarytest.BaseEnv(childEnv+"=args", "PRISM_CONTROL_PLANE_PORT="+strconv.Itoa(p.Port))

	code, _, stderr := binarytest.Run(t, exe, probeEnv, "--health-probe")
	assert.Equal(t, 0, code, "SERVING plugin: %s", stderr)

	_, err = pluginv1.NewPluginServiceClient(p.Conn).Drain(t.Context(), &pluginv1.DrainRequest{Timeout: durationpb.New(0)})
	require.NoError(t, err)
	code, _, stderr = binarytest.Run(t, exe, probeEnv, "--health-probe")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "NOT_SERVING")

	code, _, stderr = binarytest.Run(t, exe, binarytest.BaseEnv(childEnv+"=args",
		"PRISM_CONTROL_PLANE_PORT="+strconv.Itoa(binarytest.FreePort(t))), "--health-probe")
	assert.Equal(t, 1, code, "nothing listening")
	assert.Contains(t, stderr, "health probe")
}
