package faulttest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// Kafka is a private single-node KRaft broker (broker and controller in one JVM) with its own
// data directory, which a test may kill with SIGKILL and start again.
type Kafka struct {
	// Addr is the PLAINTEXT listener.
	Addr string

	java, libs, log4j, conf string
	proc                    *process
}

// StartKafka formats and starts a private broker from the jars `make services` downloaded.
func StartKafka(tb testing.TB) *Kafka {
	tb.Helper()
	libs, err := kafkaLibs()
	if err != nil {
		tb.Fatalf("%v", err)
	}
	java, err := javaBinary()
	if err != nil {
		tb.Fatalf("%v", err)
	}
	root := privateDir(tb, nil, "prism-fault-kafka-")
	port, controller := freePort(tb), freePort(tb)
	k := &Kafka{
		Addr: "127.0.0.1:" + strconv.Itoa(port), java: java, libs: libs,
		conf: filepath.Join(root, "server.properties"),
	}
	if repo, err := repoRoot(); err == nil {
		k.log4j = filepath.Join(repo, "scripts", "services", "kafka-log4j2.properties")
	}
	props := strings.Join([]string{
		"process.roles=broker,controller",
		"node.id=1",
		fmt.Sprintf("controller.quorum.voters=1@127.0.0.1:%d", controller),
		fmt.Sprintf("listeners=PLAINTEXT://127.0.0.1:%d,CONTROLLER://127.0.0.1:%d", port, controller),
		fmt.Sprintf("advertised.listeners=PLAINTEXT://127.0.0.1:%d", port),
		"listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
		"controller.listener.names=CONTROLLER",
		"inter.broker.listener.name=PLAINTEXT",
		"log.dirs=" + filepath.Join(root, "data"),
		"num.partitions=3",
		"default.replication.factor=1",
		"min.insync.replicas=1",
		"auto.create.topics.enable=false",
		"offsets.topic.replication.factor=1",
		"offsets.topic.num.partitions=3",
		"transaction.state.log.replication.factor=1",
		"transaction.state.log.min.isr=1",
		"share.coordinator.state.topic.replication.factor=1",
		"share.coordinator.state.topic.min.isr=1",
		"group.initial.rebalance.delay.ms=0",
		"num.network.threads=2",
		"num.io.threads=2",
		"",
	}, "\n")
	if err := os.WriteFile(k.conf, []byte(props), 0o600); err != nil {
		tb.Fatalf("write kafka config: %v", err)
	}
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	// The static voter list above needs no --standalone (as scripts/services.sh formats). The id
	// goes after '=': one random id in 64 starts with '-', which would otherwise read as an option.
	format := exec.Command(java, k.jvmArgs("kafka.tools.StorageTool", "format", //nolint:gosec // test JVM
		"--cluster-id="+base64.RawURLEncoding.EncodeToString(id), "-c", k.conf)...)
	if out, err := format.CombinedOutput(); err != nil {
		tb.Fatalf("kafka storage format: %v\n%s", err, out)
	}
	if err := k.Start(); err != nil {
		tb.Fatalf("%v", err)
	}
	tb.Cleanup(func() { _ = k.Kill() })
	return k
}

func (k *Kafka) jvmArgs(mainClass string, args ...string) []string {
	return append([]string{"-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
		"-Djava.awt.headless=true", "-Dlog4j2.configurationFile=" + k.log4j, "-Dprism.kafka.loglevel=WARN",
		"-cp", filepath.Join(k.libs, "*"), mainClass}, args...)
}

// Start runs the broker (again) and waits until it serves metadata with a ready controller.
func (k *Kafka) Start() error {
	proc, err := startProcess("kafka", append([]string{k.java}, k.jvmArgs("kafka.Kafka", k.conf)...), nil,
		[]string{"PATH=/usr/bin:/bin", "HOME=" + os.Getenv("HOME")})
	if err != nil {
		return err
	}
	k.proc = proc
	if !waitFor(120*time.Second, func() bool { return proc.exited() || k.ready() }) || proc.exited() {
		return fmt.Errorf("private kafka did not start\n%s", tail(proc.log.String(), 3000))
	}
	return nil
}

func (k *Kafka) ready() bool {
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Addr), kgo.RetryTimeout(time.Second))
	if err != nil {
		return false
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = kadm.NewClient(cl).ListTopics(ctx)
	return err == nil
}

// Kill ends the broker with SIGKILL.
func (k *Kafka) Kill() error {
	if k.proc == nil || k.proc.exited() {
		return nil
	}
	return k.proc.kill()
}

// Signal sends sig (SIGSTOP, SIGCONT) to the broker. After SIGSTOP it waits until every thread
// of the JVM has stopped (a thread finishing a system call stops only when that returns), so
// nothing the broker does afterwards can answer a request.
func (k *Kafka) Signal(sig syscall.Signal) error {
	if err := k.proc.signalGroup(sig); err != nil {
		return err
	}
	if sig != syscall.SIGSTOP {
		return nil
	}
	if !waitFor(5*time.Second, func() bool { return allThreadsStopped(k.proc.cmd.Process.Pid) }) {
		return fmt.Errorf("kafka: threads still running 5s after SIGSTOP")
	}
	return nil
}

// allThreadsStopped reports whether every thread of pid is in the stopped state.
func allThreadsStopped(pid int) bool {
	stats, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	if err != nil || len(stats) == 0 {
		return false
	}
	for _, f := range stats {
		b, err := os.ReadFile(f) //nolint:gosec // a /proc path built from our own child's pid
		if err != nil {
			return false
		}
		// The state follows the command name, which is in parentheses and may hold spaces.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 || i+2 >= len(b) || b[i+2] != 'T' {
			return false
		}
	}
	return true
}

// kafkaLibs finds the Kafka jars: PRISM_KAFKA_LIBS, else .services/kafka/libs of this checkout
// or, from a git worktree, of the main checkout.
func kafkaLibs() (string, error) {
	if d := os.Getenv("PRISM_KAFKA_LIBS"); d != "" {
		return d, nil
	}
	var tried []string
	for _, root := range checkoutRoots() {
		d := filepath.Join(root, ".services", "kafka", "libs")
		tried = append(tried, d)
		if jars, _ := filepath.Glob(filepath.Join(d, "kafka_*.jar")); len(jars) > 0 {
			return d, nil
		}
	}
	return "", fmt.Errorf("no Kafka jars in %s (make services downloads them; or set PRISM_KAFKA_LIBS)", strings.Join(tried, ", "))
}

// checkoutRoots are this checkout's root and, for a worktree, the main checkout's.
func checkoutRoots() []string {
	var roots []string
	if r, err := repoRoot(); err == nil {
		roots = append(roots, r)
	}
	if out, err := exec.Command("git", "rev-parse", "--path-format=absolute", "--git-common-dir").Output(); err == nil {
		roots = append(roots, filepath.Dir(strings.TrimSpace(string(out))))
	}
	return roots
}

// repoRoot walks up from the working directory to the directory holding go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}

func javaBinary() (string, error) {
	for _, j := range []string{os.Getenv("PRISM_SERVICES_JAVA"), "/usr/lib/jvm/java-17-openjdk-amd64/bin/java"} {
		if j != "" {
			if _, err := os.Stat(j); err == nil { //nolint:gosec // the developer's own java path
				return j, nil
			}
		}
	}
	if j, err := exec.LookPath("java"); err == nil {
		return j, nil
	}
	return "", fmt.Errorf("no java (make services installs openjdk-17)")
}
