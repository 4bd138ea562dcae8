package core

import (
	"bytes"
	"log/slog"
	"runtime/debug"
	"testing"
	"testing/fstest"

	"github.com/stretchr/testify/assert"
)

func files(kv ...string) fstest.MapFS {
	m := fstest.MapFS{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = &fstest.MapFile{Data: []byte(kv[i+1])}
	}
	return m
}

func TestCgroupMemoryLimit(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		fsys      fstest.MapFS
		wantLimit int64
		wantFile  string
	}{
		{"cgroup v2 inside the container's own namespace", files(
			"proc/self/cgroup", "0::/\n",
			"sys/fs/cgroup/memory.max", "536870912\n"),
			512 << 20, "/sys/fs/cgroup/memory.max"},
		{"cgroup v2 without a limit", files(
			"proc/self/cgroup", "0::/\n",
			"sys/fs/cgroup/memory.max", "max\n"), 0, ""},
		{"cgroup v2 where a parent is tighter than the process's own cgroup", files(
			"proc/self/cgroup", "0::/kubepods/pod1/ctr\n",
			"sys/fs/cgroup/kubepods/pod1/ctr/memory.max", "1073741824\n",
			"sys/fs/cgroup/kubepods/pod1/memory.max", "268435456\n",
			"sys/fs/cgroup/kubepods/memory.max", "max\n"),
			256 << 20, "/sys/fs/cgroup/kubepods/pod1/memory.max"},
		{"cgroup v1 memory controller", files(
			"proc/self/cgroup", "12:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/\n",
			"sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes", "1073741824\n",
			"sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n"),
			1 << 30, "/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes"},
		{"cgroup v1 without a limit (the huge sentinel)", files(
			"proc/self/cgroup", "4:memory:/\n",
			"sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n"), 0, ""},
		{"cgroup v1 limit seen through the container's namespace only", files(
			"proc/self/cgroup", "4:memory:/not/mounted/here\n",
			"sys/fs/cgroup/memory/memory.limit_in_bytes", "2147483648\n"),
			2 << 30, "/sys/fs/cgroup/memory/memory.limit_in_bytes"},
		{"no cgroup files at all", files(), 0, ""},
		{"garbage in the limit file", files(
			"proc/self/cgroup", "0::/\n",
			"sys/fs/cgroup/memory.max", "lots\n"), 0, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			limit, file := cgroupMemoryLimit(tc.fsys)
			assert.Equal(t, tc.wantLimit, limit)
			assert.Equal(t, tc.wantFile, file)
		})
	}
}

// Not parallel: the memory limit belongs to the whole process.
func TestApplyMemoryLimit(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	cgroup := files("proc/self/cgroup", "0::/\n", "sys/fs/cgroup/memory.max", "1000000000\n")
	noEnv := func(string) (string, bool) { return "", false }

	m := applyMemoryLimit(cgroup, noEnv)
	assert.Equal(t, int64(900_000_000), m.goLimit, "90 %% of the container's limit")
	assert.Equal(t, int64(900_000_000), debug.SetMemoryLimit(-1), "set in the runtime")
	var logs bytes.Buffer
	m.log(slog.New(slog.NewTextHandler(&logs, nil)))
	assert.Contains(t, logs.String(), "gomemlimit_bytes=900000000")
	assert.Contains(t, logs.String(), "cgroup_limit_bytes=1000000000")
	assert.Equal(t, 1, bytes.Count(logs.Bytes(), []byte("\n")), "one line")

	debug.SetMemoryLimit(123 << 20)
	m = applyMemoryLimit(cgroup, func(name string) (string, bool) { return "123MiB", name == "GOMEMLIMIT" })
	assert.True(t, m.fromEnv)
	assert.Equal(t, int64(123<<20), debug.SetMemoryLimit(-1), "GOMEMLIMIT wins, untouched")

	debug.SetMemoryLimit(prev)
	m = applyMemoryLimit(files(), noEnv)
	assert.Equal(t, memoryLimit{}, m, "no container limit, nothing set")
	assert.Equal(t, prev, debug.SetMemoryLimit(-1))
	logs.Reset()
	m.log(slog.New(slog.NewTextHandler(&logs, nil)))
	assert.Empty(t, logs.String(), "nothing to say")
}
