package core_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionalphapb "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/prism-gateway/plugins/core/coretest"
	keyvaluev1 "github.com/prism-gateway/plugins/gen/prism/keyvalue/v1"
	pluginv1 "github.com/prism-gateway/plugins/gen/prism/plugin/v1"
)

const kvService = "prism.keyvalue.v1.KeyValueService"

func startProbe(t *testing.T, yaml string, env map[string]string) (*probePlugin, *coretest.Running) {
	t.Helper()
	p := newProbePlugin()
	r := coretest.Start(t, p, coretest.Options{YAML: yaml, Env: env})
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 5*time.Second)
	return p, r
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(body)
}

func TestControlPlaneServesHealthReflectionAndPluginService(t *testing.T) {
	_, r := startProbe(t, "", nil)
	ctx := t.Context()

	r.WaitHealth(t, kvService, healthpb.HealthCheckResponse_SERVING, time.Second)

	stream, err := reflectionpb.NewServerReflectionClient(r.Conn).ServerReflectionInfo(ctx)
	require.NoError(t, err)
	require.NoError(t, stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	}))
	resp, err := stream.Recv()
	require.NoError(t, err)
	var services []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		services = append(services, s.GetName())
	}
	assert.Subset(t, services, []string{
		"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection",
		"prism.plugin.v1.PluginService", kvService,
	})

	alpha, err := reflectionalphapb.NewServerReflectionClient(r.Conn).ServerReflectionInfo(ctx)
	require.NoError(t, err)
	require.NoError(t, alpha.Send(&reflectionalphapb.ServerReflectionRequest{ //nolint:staticcheck // as above
		MessageRequest: &reflectionalphapb.ServerReflectionRequest_ListServices{},
	}))
	alphaResp, err := alpha.Recv()
	require.NoError(t, err)
	assert.NotEmpty(t, alphaResp.GetListServicesResponse().GetService(), //nolint:staticcheck // as above
		"v1alpha reflection answers too")

	info, err := pluginv1.NewPluginServiceClient(r.Conn).GetInfo(ctx, &pluginv1.GetInfoRequest{})
	require.NoError(t, err)
	assert.Equal(t, "probe", info.GetName())
	assert.Equal(t, "none", info.GetBackend())
	assert.Equal(t, []string{kvService}, info.GetServices())
	assert.Equal(t, "true", info.GetCapabilities()["probing"])
	assert.Equal(t, "true", info.GetCapabilities()["drain"])
	assert.NotEmpty(t, info.GetBuild().GetGoVersion())
	assert.WithinDuration(t, time.Now(), info.GetStartTime().AsTime(), time.Minute)
}

func TestMetricsCountCallsOverGRPCAndHTTP(t *testing.T) {
	_, r := startProbe(t, "", nil)
	ctx := t.Context()
	kv := keyvaluev1.NewKeyValueServiceClient(r.Conn)
	_, err := kv.Get(ctx, &keyvaluev1.GetRequest{Id: "x"})
	require.NoError(t, err)
	_, err = kv.Get(ctx, &keyvaluev1.GetRequest{Id: "invalid"})
	require.Error(t, err)

	m, err := pluginv1.NewPluginServiceClient(r.Conn).GetMetrics(ctx, &pluginv1.GetMetricsRequest{})
	require.NoError(t, err)
	assert.Contains(t, m.GetText(), `prism_grpc_server_handled_total{grpc_code="OK",grpc_method="Get",grpc_service="prism.keyvalue.v1.KeyValueService"} 1`)
	assert.Contains(t, m.GetText(), `prism_grpc_server_handled_total{grpc_code="InvalidArgument",grpc_method="Get",grpc_service="prism.keyvalue.v1.KeyValueService"} 1`)
	assert.Contains(t, m.GetText(), "prism_grpc_server_handling_seconds_bucket")
	assert.Contains(t, m.GetContentType(), "text/plain")

	code, body := httpGet(t, r.MetricsURL+"/metrics")
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, body, "prism_grpc_server_handled_total")
	assert.Contains(t, body, "prism_backend_up 1")
	code, _ = httpGet(t, r.MetricsURL+"/healthz")
	assert.Equal(t, http.StatusOK, code)
	code, _ = httpGet(t, r.MetricsURL+"/readyz")
	assert.Equal(t, http.StatusOK, code)
}

func TestHealthFollowsTheBackend(t *testing.T) {
	p, r := startProbe(t, "control_plane:\n  health_interval: 100ms\n", nil)

	p.backendDown.Store(true)
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_NOT_SERVING, 5*time.Second)
	r.WaitHealth(t, kvService, healthpb.HealthCheckResponse_NOT_SERVING, time.Second)
	code, _ := httpGet(t, r.MetricsURL+"/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	code, _ = httpGet(t, r.MetricsURL+"/healthz")
	assert.Equal(t, http.StatusOK, code, "the process itself is alive")

	p.backendDown.Store(false)
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, 5*time.Second)
	code, _ = httpGet(t, r.MetricsURL+"/readyz")
	assert.Equal(t, http.StatusOK, code)
}

func TestHealthWatchSeesTransitions(t *testing.T) {
	p, r := startProbe(t, "control_plane:\n  health_interval: 100ms\n", nil)
	watch, err := healthpb.NewHealthClient(r.Conn).Watch(t.Context(), &healthpb.HealthCheckRequest{Service: kvService})
	require.NoError(t, err)
	first, err := watch.Recv()
	require.NoError(t, err)
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, first.GetStatus())
	p.backendDown.Store(true)
	next, err := watch.Recv()
	require.NoError(t, err)
	assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, next.GetStatus())
}

// blockedGet starts a Get that the probe holds until p.release is closed.
func blockedGet(t *testing.T, p *probePlugin, r *coretest.Running) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := keyvaluev1.NewKeyValueServiceClient(r.Conn).Get(context.Background(), &keyvaluev1.GetRequest{Id: "block"})
		done <- err
	}()
	select {
	case <-p.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("blocked call never reached the handler")
	}
	return done
}

func TestDrainWaitsForInFlightCallsAndRefusesNewOnes(t *testing.T) {
	p, r := startProbe(t, "", nil)
	ctx := t.Context()
	inFlight := blockedGet(t, p, r)

	drained := make(chan *pluginv1.DrainResponse, 1)
	go func() {
		resp, err := pluginv1.NewPluginServiceClient(r.Conn).Drain(context.Background(), &pluginv1.DrainRequest{Timeout: durationpb.New(10 * time.Second)})
		assert.NoError(t, err)
		drained <- resp
	}()

	r.WaitHealth(t, "", healthpb.HealthCheckResponse_NOT_SERVING, 5*time.Second)
	r.WaitHealth(t, kvService, healthpb.HealthCheckResponse_NOT_SERVING, time.Second)
	_, err := keyvaluev1.NewKeyValueServiceClient(r.Conn).Get(ctx, &keyvaluev1.GetRequest{Id: "new"})
	assert.Equal(t, codes.Unavailable, status.Code(err), "new data calls are refused while draining")
	_, err = pluginv1.NewPluginServiceClient(r.Conn).GetInfo(ctx, &pluginv1.GetInfoRequest{})
	require.NoError(t, err, "the control plane keeps answering")

	select {
	case <-drained:
		t.Fatal("drain returned while a call was still running")
	case <-time.After(200 * time.Millisecond):
	}
	close(p.release)
	require.NoError(t, <-inFlight, "the in-flight call completes normally")
	resp := <-drained
	assert.True(t, resp.GetDrained())
	assert.Zero(t, resp.GetInFlightRemaining())
}

func TestDrainReportsCallsStillRunningAtTheTimeout(t *testing.T) {
	p, r := startProbe(t, "", nil)
	inFlight := blockedGet(t, p, r)
	resp, err := pluginv1.NewPluginServiceClient(r.Conn).Drain(t.Context(), &pluginv1.DrainRequest{Timeout: durationpb.New(300 * time.Millisecond)})
	require.NoError(t, err)
	assert.False(t, resp.GetDrained())
	assert.Equal(t, int64(1), resp.GetInFlightRemaining())
	close(p.release)
	require.NoError(t, <-inFlight)
}

func TestShutdownLetsInFlightCallsFinish(t *testing.T) {
	p, r := startProbe(t, "control_plane:\n  shutdown_grace: 10s\n", nil)
	inFlight := blockedGet(t, p, r)
	stopped := make(chan error, 1)
	go func() { stopped <- r.Stop() }()
	select {
	case err := <-stopped:
		t.Fatalf("shutdown finished (%v) while a call was in flight", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(p.release)
	require.NoError(t, <-inFlight)
	require.NoError(t, <-stopped)
	p.mu.Lock()
	defer p.mu.Unlock()
	assert.Equal(t, 1, p.stops, "the plugin is stopped exactly once")
}

func TestShutdownCutsOffCallsAfterTheGracePeriod(t *testing.T) {
	p, r := startProbe(t, "control_plane:\n  shutdown_grace: 300ms\n", nil)
	inFlight := blockedGet(t, p, r)
	start := time.Now()
	require.NoError(t, r.Stop())
	assert.Less(t, time.Since(start), 5*time.Second)
	require.Error(t, <-inFlight)
}

func TestReloadAppliesLogLevelLive(t *testing.T) {
	p, r := startProbe(t, "log:\n  level: info\n", nil)
	ctx := t.Context()
	kv := keyvaluev1.NewKeyValueServiceClient(r.Conn)
	_, err := kv.Get(ctx, &keyvaluev1.GetRequest{Id: "before"})
	require.NoError(t, err)
	assert.False(t, r.Logs.Contains(`"msg":"rpc"`), "per-call lines are debug level")

	r.WriteConfig(t, "log:\n  level: debug\nlimits:\n  max_things: 3\nbackend:\n  label: x\n")
	resp, err := pluginv1.NewPluginServiceClient(r.Conn).Reload(ctx, &pluginv1.ReloadRequest{})
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"log.level", "limits.max_things"}, resp.GetChanged())
	assert.Equal(t, []string{"backend.label"}, resp.GetRestartRequired())
	assert.Equal(t, "debug", r.Server.Config().Log.Level)
	p.mu.Lock()
	assert.ElementsMatch(t, []string{"limits.max_things", "backend.label"}, p.reconfig)
	p.mu.Unlock()

	_, err = kv.Get(ctx, &keyvaluev1.GetRequest{Id: "after"})
	require.NoError(t, err)
	assert.True(t, r.Logs.Contains(`"msg":"rpc"`), "debug lines appear after the reload")

	again, err := pluginv1.NewPluginServiceClient(r.Conn).Reload(ctx, &pluginv1.ReloadRequest{})
	require.NoError(t, err)
	assert.Empty(t, again.GetChanged(), "an unchanged file changes nothing")
}

func TestReloadRejectsABrokenConfigAndKeepsTheOld(t *testing.T) {
	_, r := startProbe(t, "log:\n  level: warn\n", nil)
	ctx := t.Context()
	plugin := pluginv1.NewPluginServiceClient(r.Conn)
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown key", "log:\n  levle: debug\n", `unknown key "log.levle"`},
		{"invalid value", "log:\n  level: chatty\n", "log.level"},
		{"not YAML", "log: [unclosed\n", "plugin.yaml"},
		{"rejected by the plugin", "backend:\n  label: reject\n", "label: rejected by plugin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r.WriteConfig(t, tt.yaml)
			_, err := plugin.Reload(ctx, &pluginv1.ReloadRequest{})
			require.Error(t, err)
			assert.Equal(t, codes.FailedPrecondition, status.Code(err))
			assert.Contains(t, status.Convert(err).Message(), tt.want)
			assert.Equal(t, "warn", r.Server.Config().Log.Level, "the old config stays in force")
		})
	}
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, time.Second)
}

func TestErrorsMapToGRPCCodesAtTheEdge(t *testing.T) {
	_, r := startProbe(t, "", nil)
	kv := keyvaluev1.NewKeyValueServiceClient(r.Conn)
	tests := []struct {
		id          string
		code        codes.Code
		wantMessage string
	}{
		{"invalid", codes.InvalidArgument, "id: must be at most 3 bytes (limits.max_things)"},
		{"panic", codes.Internal, "internal error"},
		{"plain", codes.Internal, "something broke"},
		{"missing", codes.OK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.id, func(t *testing.T) {
			_, err := kv.Get(t.Context(), &keyvaluev1.GetRequest{Id: tt.id})
			assert.Equal(t, tt.code, status.Code(err))
			assert.Equal(t, tt.wantMessage, status.Convert(err).Message())
		})
	}
	_, err := kv.Delete(t.Context(), &keyvaluev1.DeleteRequest{})
	assert.Equal(t, codes.Unimplemented, status.Code(err))
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_SERVING, time.Second)
	assert.True(t, r.Logs.Contains("probe panic"), "the panic is logged with its stack")
}

func TestSecretsNeverReachLogsOrClients(t *testing.T) {
	const secret = "pr0be-s3cret-value"
	p, r := startProbe(t, "control_plane:\n  health_interval: 100ms\nlog:\n  level: debug\n", map[string]string{"PROBE_PASSWORD": secret})

	_, err := keyvaluev1.NewKeyValueServiceClient(r.Conn).Get(t.Context(), &keyvaluev1.GetRequest{Id: "leak"})
	require.Error(t, err)
	assert.NotContains(t, status.Convert(err).Message(), secret)
	assert.Contains(t, status.Convert(err).Message(), "[REDACTED]")

	p.backendDown.Store(true)
	r.WaitHealth(t, "", healthpb.HealthCheckResponse_NOT_SERVING, 5*time.Second)
	require.Eventually(t, func() bool { return r.Logs.Contains("backend unhealthy") }, 5*time.Second, 20*time.Millisecond)
	logs := r.Logs.String()
	assert.NotContains(t, logs, secret)
	assert.Contains(t, logs, "connect as probe:[REDACTED] refused")
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		assert.True(t, strings.HasPrefix(line, "{") && strings.HasSuffix(line, "}"), "log lines are JSON: %s", line)
	}
}

// The server reads frames into buffers it does not clear; a request must still arrive exactly as
// sent whatever the earlier requests in those buffers held. Concurrent callers send values of
// many sizes (one frame to many, up to 300 KiB) filled with their own byte and read them back.
func TestRequestsArriveIntactThroughReusedBuffers(t *testing.T) {
	_, r := startProbe(t, "", nil)
	client := keyvaluev1.NewKeyValueServiceClient(r.Conn)
	sizes := []int{0, 1, 1023, 1024, 4 << 10, 16<<10 - 9, 16 << 10, 16<<10 + 1, 33 << 10, 100 << 10, 300 << 10, 5 << 10}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for worker := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for round := range 20 {
				fill := byte('a' + worker)
				items := make([]*keyvaluev1.PutItem, 0, 3)
				for j := range 3 {
					n := sizes[(round*3+j+worker)%len(sizes)]
					items = append(items, &keyvaluev1.PutItem{Key: []byte("k"), Value: bytes.Repeat([]byte{fill + byte(j)}, n)})
				}
				resp, err := client.Put(t.Context(), &keyvaluev1.PutRequest{Namespace: "ns", Id: "id", Items: items})
				if err != nil {
					errs <- err
					return
				}
				for j, v := range resp.GetVersions() {
					if !bytes.Equal(items[j].GetValue(), v.GetKey()) {
						errs <- fmt.Errorf("worker %d round %d item %d: %d bytes sent, %d came back different", worker, round, j, len(items[j].GetValue()), len(v.GetKey()))
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}
