package imagetest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/prism-gateway/plugins/core/healthwait"
	cachev1 "github.com/prism-gateway/plugins/gen/prism/cache/v1"
	keyvaluev1 "github.com/prism-gateway/plugins/gen/prism/keyvalue/v1"
	streamv1 "github.com/prism-gateway/plugins/gen/prism/stream/v1"
	"github.com/prism-gateway/plugins/internal/binarytest"
	"github.com/prism-gateway/plugins/internal/testsvc"
)

const (
	repoRoot = "../.."
	// registry and version tag the images this test builds, apart from a developer's own.
	registry = "localhost/prism-imagetest"
	version  = "imagetest"
	nonroot  = "65532:65532"
)

var plugins = []string{"postgres", "kafka", "redis"}

// built is the result of the one image build of this test run.
var built struct {
	once      sync.Once
	buildTime string
	out       string
	err       error
}

// images builds the six offline images once per test run (outside any test deadline) and returns
// the build time stamped into them.
func images(t *testing.T) string {
	t.Helper()
	built.once.Do(func() {
		if os.Getenv("CONTAINERS_CONF") == "" {
			conf, err := filepath.Abs(filepath.Join(repoRoot, "scripts", "containers.conf"))
			if err != nil {
				built.err = err
				return
			}
			// The podman commands of this test use runc, cgroupfs and explicit ulimits.
			built.err = os.Setenv("CONTAINERS_CONF", conf)
		}
		built.buildTime = time.Now().UTC().Format("2006-01-02T15:04:05Z")
		install := exec.Command("bash", "scripts/podman.sh", "install")
		install.Dir = repoRoot
		out, err := install.CombinedOutput()
		built.out = string(out)
		if err != nil {
			built.err = fmt.Errorf("install podman (bash scripts/podman.sh install): %w", err)
			return
		}
		mk := exec.Command("make", "--no-print-directory", "IMAGE_SOURCE=offline", "REGISTRY="+registry,
			"VERSION="+version, "BUILD_TIME="+built.buildTime, "build", "build-debug")
		mk.Dir = repoRoot
		out, err = mk.CombinedOutput()
		built.out += string(out)
		if err != nil {
			built.err = fmt.Errorf("make build build-debug: %w", err)
		}
	})
	require.NoError(t, built.err, "%s", built.out)
	return built.buildTime
}

func prodImage(plugin string) string { return registry + "/" + plugin + "-plugin:" + version }
func debugImage(plugin string) string {
	return registry + "/" + plugin + "-plugin:" + version + "-debug"
}

func podman(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), "podman", args...).CombinedOutput()
	require.NoError(t, err, "podman %s\n%s", strings.Join(args, " "), out)
	return string(out)
}

type imageConfig struct {
	User         string
	Entrypoint   []string
	Cmd          []string
	Env          []string
	WorkingDir   string
	ExposedPorts map[string]struct{}
	Labels       map[string]string
}

func inspectConfig(t *testing.T, image string) imageConfig {
	t.Helper()
	var got []struct{ Config imageConfig }
	require.NoError(t, json.Unmarshal([]byte(podman(t, "image", "inspect", image)), &got))
	require.Len(t, got, 1)
	return got[0].Config
}

func saveImage(t *testing.T, image string) map[string]imageFile {
	t.Helper()
	archive := filepath.Join(t.TempDir(), "image.tar")
	podman(t, "save", "--format", "docker-archive", "-o", archive, image)
	return imageFiles(t, archive)
}

func TestImagesHaveTheDistrolessLayout(t *testing.T) {
	buildTime := images(t)
	commit, err := exec.Command("git", "-C", repoRoot, "rev-parse", "HEAD").Output()
	require.NoError(t, err)
	for _, plugin := range plugins {
		for _, debug := range []bool{false, true} {
			image := prodImage(plugin)
			if debug {
				image = debugImage(plugin)
			}
			t.Run(image, func(t *testing.T) {
				cfg := inspectConfig(t, image)
				assert.Equal(t, nonroot, cfg.User)
				assert.Equal(t, []string{"/" + plugin + "-plugin"}, cfg.Entrypoint)
				assert.Empty(t, cfg.Cmd)
				assert.Equal(t, "/home/nonroot", cfg.WorkingDir)
				assert.Contains(t, cfg.Env, "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt")
				assert.Len(t, cfg.ExposedPorts, 2, "gRPC and metrics ports")
				assert.Equal(t, version, cfg.Labels["org.opencontainers.image.version"])
				assert.Equal(t, strings.TrimSpace(string(commit)), cfg.Labels["org.opencontainers.image.revision"])
				assert.Equal(t, buildTime, cfg.Labels["org.opencontainers.image.created"])
				assert.Equal(t, "prism-"+plugin+"-plugin", cfg.Labels["org.opencontainers.image.title"])
				assert.NotEmpty(t, cfg.Labels["org.opencontainers.image.base.name"])

				files := saveImage(t, image)
				bin, ok := files["/"+plugin+"-plugin"]
				require.True(t, ok, "the image has /%s-plugin", plugin)
				assert.Equal(t, int64(0o755), bin.hdr.Mode&0o7777)
				assert.Contains(t, string(files["/etc/passwd"].data), "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin")
				assert.Contains(t, string(files["/etc/group"].data), "nonroot:x:65532:")
				assert.Contains(t, string(files["/etc/ssl/certs/ca-certificates.crt"].data), "BEGIN CERTIFICATE")
				tmp := files["/tmp"]
				require.NotNil(t, tmp.hdr, "the image has /tmp")
				assert.Equal(t, int64(0o1777), tmp.hdr.Mode&0o7777, "/tmp is world-writable and sticky")
				home := files["/home/nonroot"]
				require.NotNil(t, home.hdr, "the image has /home/nonroot")
				assert.Equal(t, []int{65532, 65532}, []int{home.hdr.Uid, home.hdr.Gid})
				assert.Equal(t, int64(0o700), home.hdr.Mode&0o7777)
				for _, shell := range []string{"/bin/sh", "/bin/bash", "/bin/busybox", "/usr/bin/sh"} {
					assert.NotContains(t, files, shell)
				}
				if debug {
					assert.Contains(t, files, "/busybox/busybox")
					assert.Equal(t, "busybox", files["/busybox/sh"].hdr.Linkname, "/busybox/sh is busybox")
				} else {
					for p := range files {
						assert.False(t, strings.HasPrefix(p, "/busybox"), "production image has no %s", p)
					}
				}
			})
		}
	}
}

func TestDebugImagesHaveABusyboxShell(t *testing.T) {
	images(t)
	for _, plugin := range plugins {
		out := podman(t, "run", "--rm", "--network", "none", "--entrypoint", "/busybox/sh", debugImage(plugin),
			"-c", "id -u && ls /"+plugin+"-plugin")
		assert.Equal(t, "65532\n/"+plugin+"-plugin\n", out)
	}
}

func TestImagesStampVersionAndLeaveOutDevBackends(t *testing.T) {
	buildTime := images(t)
	for _, plugin := range plugins {
		out := podman(t, "run", "--rm", "--network", "none", prodImage(plugin), "--version")
		assert.Contains(t, out, plugin+"-plugin "+version)
		assert.Contains(t, out, "built "+buildTime)
		assert.NotContains(t, out, "unknown")

		dev, err := exec.CommandContext(t.Context(), "podman", "run", "--rm", "--network", "none", prodImage(plugin), "--dev").CombinedOutput()
		var exit *exec.ExitError
		require.ErrorAs(t, err, &exit, "--dev must fail in an image: %s", dev)
		assert.Equal(t, 1, exit.ExitCode())
		assert.Contains(t, string(dev), "built without dev backends")
	}
}

// container is one plugin image running in the background.
type container struct {
	name   string
	port   int
	exited chan struct{} // closed when the container stops
}

// runLocked runs an image the way a locked-down Kubernetes pod would: read-only root, UID 65532,
// no capabilities, no privilege escalation; host networking reaches the test backends on
// 127.0.0.1 and the plugin listens on free ports.
func runLocked(t *testing.T, plugin string, env ...string) *container {
	t.Helper()
	c := &container{
		name:   fmt.Sprintf("prism-imagetest-%s-%d", plugin, os.Getpid()),
		port:   binarytest.FreePort(t),
		exited: make(chan struct{}),
	}
	metricsPort := binarytest.FreePort(t)
	args := []string{"run", "-d", "--name", c.name, "--read-only", "--user", nonroot, "--cap-drop=all",
		"--security-opt", "no-new-privileges", "--network", "host",
		"-e", "PRISM_CONTROL_PLANE_HOST=127.0.0.1", "-e", "PRISM_CONTROL_PLANE_PORT=" + strconv.Itoa(c.port),
		"-e", "PRISM_METRICS_HOST=127.0.0.1", "-e", "PRISM_METRICS_PORT=" + strconv.Itoa(metricsPort)}
	for _, e := range env {
		args = append(args, "-e", e)
	}
	_ = exec.Command("podman", "rm", "-f", c.name).Run()
	podman(t, append(args, prodImage(plugin))...)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := exec.Command("podman", "logs", c.name).CombinedOutput()
			t.Logf("%s logs:\n%s", c.name, out)
		}
		_ = exec.Command("podman", "rm", "-f", "-t", "0", c.name).Run()
	})
	go func() {
		defer close(c.exited)
		_ = exec.Command("podman", "wait", c.name).Run()
	}()
	return c
}

// serve waits (generously: the machine is shared) for SERVING and returns a client connection.
func (c *container) serve(t *testing.T) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("127.0.0.1:"+strconv.Itoa(c.port), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	require.NoError(t, healthwait.Until(ctx, conn, "", healthpb.HealthCheckResponse_SERVING, c.exited), "%s not SERVING", c.name)
	return conn
}

// stop sends SIGTERM (podman stop) and returns the container's exit code.
func (c *container) stop(t *testing.T) int {
	t.Helper()
	podman(t, "stop", "--time", "60", c.name)
	select {
	case <-c.exited:
	case <-time.After(time.Minute):
		t.Fatalf("%s did not exit after SIGTERM", c.name)
	}
	code, err := strconv.Atoi(strings.TrimSpace(podman(t, "inspect", "--format", "{{.State.ExitCode}}", c.name)))
	require.NoError(t, err)
	return code
}

func callCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestImagesServeLockedDownAndStopOnSIGTERM(t *testing.T) {
	images(t)
	run := fmt.Sprintf("imagetest-%d", time.Now().UnixNano())

	t.Run("postgres", func(t *testing.T) {
		c := runLocked(t, "postgres", "DATABASE_URL="+testsvc.PostgresURL(t))
		kv := keyvaluev1.NewKeyValueServiceClient(c.serve(t))
		_, err := kv.Put(callCtx(t), &keyvaluev1.PutRequest{Namespace: run, Id: "user:alice",
			Items: []*keyvaluev1.PutItem{{Key: []byte("name"), Value: []byte("Alice")}}})
		require.NoError(t, err)
		got, err := kv.Get(callCtx(t), &keyvaluev1.GetRequest{Namespace: run, Id: "user:alice"})
		require.NoError(t, err)
		require.Len(t, got.GetItems(), 1)
		assert.Equal(t, []byte("Alice"), got.GetItems()[0].GetValue())
		assert.Equal(t, 0, c.stop(t), "SIGTERM exits 0")
	})

	t.Run("kafka", func(t *testing.T) {
		c := runLocked(t, "kafka", "KAFKA_BROKERS="+strings.Join(testsvc.KafkaSASLBrokers(t), ","),
			"PRISM_BACKEND_SASL_MECHANISM=SCRAM-SHA-512", "KAFKA_SASL_USERNAME=prism", "KAFKA_SASL_PASSWORD="+testsvc.Password,
			"PRISM_BACKEND_AUTO_CREATE_TOPICS=true")
		stream := streamv1.NewStreamServiceClient(c.serve(t))
		resp, err := stream.Publish(callCtx(t), &streamv1.PublishRequest{Topic: run,
			Records: []*streamv1.Record{{Key: []byte("order-1"), Value: []byte(`{"total":42}`)}}})
		require.NoError(t, err)
		assert.Len(t, resp.GetAcks(), 1)
		assert.Equal(t, 0, c.stop(t), "SIGTERM exits 0")
	})

	t.Run("redis", func(t *testing.T) {
		c := runLocked(t, "redis", "REDIS_ADDRESS="+testsvc.RedisAddr(t), "REDIS_USERNAME=prism", "REDIS_PASSWORD="+testsvc.Password)
		cache := cachev1.NewCacheServiceClient(c.serve(t))
		_, err := cache.Set(callCtx(t), &cachev1.SetRequest{Namespace: run, Key: "greeting", Value: []byte("hello"),
			Ttl: durationpb.New(time.Minute)})
		require.NoError(t, err)
		got, err := cache.Get(callCtx(t), &cachev1.GetRequest{Namespace: run, Key: "greeting"})
		require.NoError(t, err)
		assert.True(t, got.GetFound())
		assert.Equal(t, []byte("hello"), got.GetValue())
		assert.Equal(t, 0, c.stop(t), "SIGTERM exits 0")
	})
}
