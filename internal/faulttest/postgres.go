package faulttest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Postgres is a private PostgreSQL cluster with durable commits (fsync and synchronous_commit
// on), which a test may kill with SIGKILL and start again on the same port and data.
type Postgres struct {
	// URL reaches the cluster as its superuser over TCP.
	URL string

	bin, data, sock string
	port            int
	cred            *syscall.Credential
	proc            *process
}

// StartPostgres creates and starts a private cluster; it is removed when the test ends.
func StartPostgres(tb testing.TB) *Postgres {
	tb.Helper()
	bin, err := postgresBinDir()
	if err != nil {
		tb.Fatalf("%v", err)
	}
	cred, err := backendUser()
	if err != nil {
		tb.Fatalf("%v", err)
	}
	root := privateDir(tb, cred, "prism-fault-pg-")
	pg := &Postgres{bin: bin, data: filepath.Join(root, "data"), sock: root, port: freePort(tb), cred: cred}
	pg.URL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", pg.port)
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", pg.data, "-U", "postgres", //nolint:gosec // test binary
		"--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync")
	initdb.Dir = "/"
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		tb.Fatalf("initdb: %v\n%s", err, out)
	}
	if err := pg.Start(); err != nil {
		tb.Fatalf("%v", err)
	}
	tb.Cleanup(func() { _ = pg.Kill() })
	return pg
}

// postgresBinDir finds the newest installed PostgreSQL server binaries (Debian's layout).
func postgresBinDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) < versionOf(dirs[j]) })
	for i := len(dirs) - 1; i >= 0; i-- {
		if _, err := os.Stat(filepath.Join(dirs[i], "postgres")); err == nil {
			return dirs[i], nil
		}
	}
	return "", fmt.Errorf("no PostgreSQL server under /usr/lib/postgresql/*/bin (make services installs it)")
}

func versionOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// Start runs the server (again) and waits until it accepts queries.
func (pg *Postgres) Start() error {
	argv := []string{filepath.Join(pg.bin, "postgres"), "-D", pg.data,
		"-c", "listen_addresses=127.0.0.1", "-c", "port=" + strconv.Itoa(pg.port),
		"-c", "unix_socket_directories=" + pg.sock, "-c", "fsync=on", "-c", "synchronous_commit=on",
		"-c", "max_connections=100", "-c", "shared_buffers=16MB"}
	proc, err := startProcess("postgres", argv, pg.cred, []string{"PATH=/usr/bin:/bin", "LC_ALL=C.UTF-8"})
	if err != nil {
		return err
	}
	pg.proc = proc
	if !waitFor(60*time.Second, func() bool { return proc.exited() || pg.ping() == nil }) || proc.exited() {
		return fmt.Errorf("private postgres did not start: %w\n%s", pg.ping(), tail(proc.log.String(), 2000))
	}
	return nil
}

// Kill ends every process of the cluster with SIGKILL: a crash, with no shutdown checkpoint.
func (pg *Postgres) Kill() error {
	if pg.proc == nil || pg.proc.exited() {
		return nil
	}
	return pg.proc.kill()
}

func (pg *Postgres) ping() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.URL)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(context.Background()) }()
	return conn.Ping(ctx)
}

// Connect opens a direct connection for the test's own checks.
func (pg *Postgres) Connect(tb testing.TB) *pgx.Conn {
	tb.Helper()
	conn, err := pgx.Connect(tb.Context(), pg.URL)
	if err != nil {
		tb.Fatalf("connect to private postgres: %v", err)
	}
	tb.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}
