package core

import (
	"runtime"
	"runtime/debug"
)

// Build facts, set at link time by the Makefile with -ldflags "-X ...".
var (
	Version   = "dev"
	Commit    = ""
	BuildTime = ""
)

// buildInfo returns the link-time facts, filled from the Go build info where the linker left gaps.
func buildInfo() (goVersion, commit, builtAt string, modified bool) {
	goVersion, commit, builtAt = runtime.Version(), Commit, BuildTime
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				if commit == "" {
					commit = s.Value
				}
			case "vcs.time":
				if builtAt == "" {
					builtAt = s.Value
				}
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	return goVersion, commit, builtAt, modified
}
