package quickstart_test

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/prism-gateway/plugins/core/coretest"
	"github.com/prism-gateway/plugins/core/healthwait"
)

const repoRoot = "../.."

// quickStartCommands returns the grpcurl lines of the README's "Quick start" section, in order.
func quickStartCommands(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, "README.md"))
	require.NoError(t, err)
	defer func() { _ = f.Close() }()
	var cmds []string
	inSection, inBlock := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			inSection = line == "## Quick start"
		case inSection && strings.HasPrefix(line, "```"):
			inBlock = !inBlock
		case inSection && inBlock && strings.HasPrefix(line, "grpcurl "):
			cmds = append(cmds, line)
		}
	}
	require.NoError(t, sc.Err())
	require.NotEmpty(t, cmds, "README has no grpcurl commands under ## Quick start")
	return cmds
}

// makeRun starts `make run` in its own process group and waits until all three plugins serve.
type makeRun struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when make exits; err is then set
	err  error
	out  *coretest.Buffer
}

// buildTime is the stamp of every build in this test: with the same stamp, make run finds the
// binaries that buildBinaries made up to date and starts them without relinking.
var buildTime = time.Now().UTC().Format("2006-01-02T15:04:05Z")

// buildBinaries runs make binaries before any deadline starts: a cold build cache takes
// minutes on a loaded machine, which is not the start-up time under test.
func buildBinaries(t *testing.T) {
	t.Helper()
	cmd := exec.Command("make", "--no-print-directory", "binaries", "BUILD_TIME="+buildTime)
	cmd.Dir = repoRoot
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "make binaries\n%s", out)
}

func startMakeRun(t *testing.T, devDir string) *makeRun {
	t.Helper()
	out := &coretest.Buffer{}
	cmd := exec.Command("make", "--no-print-directory", "run", "BUILD_TIME="+buildTime)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "PRISM_DEV_DIR="+devDir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	m := &makeRun{cmd: cmd, done: make(chan struct{}), out: out}
	go func() {
		m.err = cmd.Wait()
		close(m.done)
	}()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-m.done:
		case <-time.After(10 * time.Second):
		}
	})
	for _, addr := range []string{"127.0.0.1:9090", "127.0.0.1:9091", "127.0.0.1:9092"} {
		waitServing(t, addr, m)
	}
	return m
}

// stop sends Ctrl-C to the whole process group, as a terminal does, and waits until every plugin
// has drained and stopped. make itself always reports an interrupt with a non-zero status.
func (m *makeRun) stop(t *testing.T) {
	t.Helper()
	require.NoError(t, syscall.Kill(-m.cmd.Process.Pid, syscall.SIGINT))
	select {
	case <-m.done:
		t.Logf("make run exited: %v (make reports an interrupt as an error)", m.err)
	case <-time.After(30 * time.Second):
		t.Fatalf("make run did not stop within 30s\n%s", m.out.String())
	}
	for _, plugin := range []string{"postgres", "kafka", "redis"} {
		assert.Contains(t, m.out.String(), `"msg":"plugin stopped","plugin":"`+plugin+`","cut_off_calls":0`,
			"%s should drain and stop cleanly", plugin)
	}
}

func waitServing(t *testing.T, addr string, m *makeRun) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer func() { _ = conn.Close() }()
	// The binaries are already built (buildBinaries), so this is start-up time only.
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	err = healthwait.Until(ctx, conn, "", healthpb.HealthCheckResponse_SERVING, m.done)
	if errors.Is(err, healthwait.ErrAborted) {
		t.Fatalf("make run exited (%v) before %s served\n%s", m.err, addr, m.out.String())
	}
	require.NoError(t, err, "%s not SERVING in time\n%s", addr, m.out.String())
}

// buildGrpcurl builds the pinned grpcurl into dir, so the README's `grpcurl` resolves on PATH.
func buildGrpcurl(t *testing.T, dir string) {
	t.Helper()
	cmd := exec.Command("go", "build", "-modfile=tools/go.mod", "-o", filepath.Join(dir, "grpcurl"), "github.com/fullstorydev/grpcurl/cmd/grpcurl")
	cmd.Dir = repoRoot
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "build grpcurl: %s", out)
}

func runCommand(t *testing.T, binDir, command string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", command)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "PATH="+binDir+":"+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s\n%s", command, out)
	return string(out)
}

func TestQuickStartCommandsWorkVerbatimAgainstMakeRun(t *testing.T) {
	binDir := t.TempDir()
	buildGrpcurl(t, binDir)
	buildBinaries(t)
	devDir := t.TempDir()
	cmds := quickStartCommands(t)

	run := startMakeRun(t, devDir)
	outputs := map[string]string{}
	for _, c := range cmds {
		outputs[c] = runCommand(t, binDir, c)
	}
	find := func(method string) string {
		for _, c := range cmds {
			if strings.HasSuffix(c, method) {
				return c
			}
		}
		t.Fatalf("the quick start has no %s command", method)
		return ""
	}
	kvGet := find("prism.keyvalue.v1.KeyValueService/Get")
	assert.Contains(t, outputs[kvGet], `"found": true`)
	assert.Contains(t, outputs[find("prism.cache.v1.CacheService/Get")], `"found": true`)
	assert.Contains(t, outputs[find("prism.stream.v1.StreamService/Tail")], `"value": "eyJ0b3RhbCI6NDJ9"`, "Tail returns the published record")
	assert.Contains(t, outputs[find("prism.stream.v1.StreamService/Publish")], `"acks"`)
	assert.Contains(t, run.out.String(), "DEV MODE", "dev mode is announced in the log")
	run.stop(t)

	// KeyValue data lives under the dev directory and survives a restart of make run.
	again := startMakeRun(t, devDir)
	assert.Contains(t, runCommand(t, binDir, kvGet), `"found": true`)
	again.stop(t)
}
