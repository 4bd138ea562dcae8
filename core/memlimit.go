package core

import (
	"bufio"
	"bytes"
	"io/fs"
	"log/slog"
	"path"
	"runtime/debug"
	"strconv"
	"strings"
)

// memoryLimitShare is the part of a container's memory limit the Go runtime aims to stay under:
// the rest covers what the runtime does not count (thread stacks in the kernel, page cache of
// the process's own files, allocator fragmentation).
const memoryLimitShare = 0.9

// unlimitedCgroupV1 is the smallest value cgroup v1 reports for "no limit" (the largest page
// multiple of math.MaxInt64, depending on the page size).
const unlimitedCgroupV1 = 1 << 62

// memoryLimit is what applyMemoryLimit decided.
type memoryLimit struct {
	// goLimit is the limit set with debug.SetMemoryLimit; 0 when none was set.
	goLimit int64
	// cgroupLimit is the container's limit and cgroupFile the file it was read from.
	cgroupLimit int64
	cgroupFile  string
	// fromEnv is true when GOMEMLIMIT was set, so the runtime's own setting stands.
	fromEnv bool
}

// applyMemoryLimit gives the garbage collector a soft memory limit of 90 % of the container's
// cgroup memory limit, unless GOMEMLIMIT chose one already. Without it a plugin near its limit
// is OOM-killed while its heap could still have been collected; with it the collector runs
// harder only when memory gets close. fsys is the root file system (/proc and /sys/fs/cgroup).
func applyMemoryLimit(fsys fs.FS, lookupEnv func(string) (string, bool)) memoryLimit {
	if v, ok := lookupEnv("GOMEMLIMIT"); ok && v != "" {
		return memoryLimit{fromEnv: true, goLimit: debug.SetMemoryLimit(-1)}
	}
	limit, file := cgroupMemoryLimit(fsys)
	if limit <= 0 {
		return memoryLimit{}
	}
	goLimit := int64(float64(limit) * memoryLimitShare)
	debug.SetMemoryLimit(goLimit)
	return memoryLimit{goLimit: goLimit, cgroupLimit: limit, cgroupFile: file}
}

// log writes the one line that says which memory limit the process runs with, if any.
func (m memoryLimit) log(l *slog.Logger) {
	switch {
	case m.fromEnv:
		l.Info("memory limit from GOMEMLIMIT", "gomemlimit_bytes", m.goLimit)
	case m.goLimit > 0:
		l.Info("memory limit set to 90% of the container's", "gomemlimit_bytes", m.goLimit,
			"cgroup_limit_bytes", m.cgroupLimit, "cgroup_file", m.cgroupFile)
	}
}

// cgroupMemoryLimit returns the tightest memory limit on the process's cgroup and its parents
// (cgroup v2 memory.max, else cgroup v1 memory.limit_in_bytes) and the file it came from, or 0
// when there is none.
func cgroupMemoryLimit(fsys fs.FS) (int64, string) {
	v2Path, v1Path := ownCgroups(fsys)
	if limit, file := tightestLimit(fsys, "sys/fs/cgroup", v2Path, "memory.max"); limit > 0 {
		return limit, file
	}
	return tightestLimit(fsys, "sys/fs/cgroup/memory", v1Path, "memory.limit_in_bytes")
}

// ownCgroups reads /proc/self/cgroup: the process's cgroup v2 path and its cgroup v1 memory
// controller path ("/" when a line is missing, as inside a container's own cgroup namespace).
func ownCgroups(fsys fs.FS) (v2, v1 string) {
	v2, v1 = "/", "/"
	data, err := fs.ReadFile(fsys, "proc/self/cgroup")
	if err != nil {
		return v2, v1
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		// hierarchy-ID:controller-list:cgroup-path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			v2 = parts[2]
		case hasController(parts[1], "memory"):
			v1 = parts[2]
		}
	}
	return v2, v1
}

func hasController(list, name string) bool {
	for c := range strings.SplitSeq(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}

// tightestLimit reads file in the cgroup directory dir under root and in each parent up to
// root, and returns the smallest limit found with the file that holds it.
func tightestLimit(fsys fs.FS, root, dir, file string) (int64, string) {
	best, bestFile := int64(0), ""
	dir = path.Clean("/" + dir)
	for {
		name := path.Join(root, dir, file)
		if limit, ok := readLimit(fsys, name); ok && (best == 0 || limit < best) {
			best, bestFile = limit, "/"+name
		}
		if dir == "/" {
			return best, bestFile
		}
		dir = path.Dir(dir)
	}
}

// readLimit parses a memory limit file; "max" and cgroup v1's huge "no limit" are no limit.
func readLimit(fsys fs.FS, name string) (int64, bool) {
	data, err := fs.ReadFile(fsys, name)
	if err != nil {
		return 0, false
	}
	s := strings.TrimSpace(string(data))
	if s == "max" {
		return 0, false
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v <= 0 || v >= unlimitedCgroupV1 {
		return 0, false
	}
	return v, true
}
