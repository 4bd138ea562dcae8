package gen_test

import (
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// manifestFile is written by scripts/generate.sh (make generate).
const manifestFile = "gen/inputs.sha256"

// TestGeneratedCodeMatchesItsInputs recomputes gen/inputs.sha256 — the hashes of the .proto and
// buf files, scripts/generate.sh, the protoc plugins' module files, the buf version and every
// generated file — and requires it to match the committed one. It is the cheap form of the
// regeneration check: a .proto, generator or generated file changed without make generate
// shows up here in milliseconds; make lint regenerates and compares byte for byte.
func TestGeneratedCodeMatchesItsInputs(t *testing.T) {
	root := repoRoot(t)
	committed, err := os.ReadFile(filepath.Join(root, manifestFile))
	if err != nil {
		t.Fatalf("read %s (make generate writes it): %v", manifestFile, err)
	}
	want := manifestLines(string(committed))
	got := computeManifest(t, root)

	var problems []string
	for _, line := range got {
		if !slices.Contains(want, line) {
			problems = append(problems, "now:       "+line)
		}
	}
	for _, line := range want {
		if !slices.Contains(got, line) {
			problems = append(problems, "committed: "+line)
		}
	}
	if len(problems) > 0 {
		t.Fatalf("generated code may be stale (%s does not match proto/, the generators or gen/prism); run `make generate` and commit the result:\n  %s",
			manifestFile, strings.Join(problems, "\n  "))
	}
}

// manifestLines returns the non-comment lines of a manifest.
func manifestLines(text string) []string {
	var lines []string
	for _, line := range strings.Split(text, "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			lines = append(lines, line)
		}
	}
	return lines
}

var bufVersion = regexp.MustCompile(`github\.com/bufbuild/buf v\S+`)

// computeManifest is the Go twin of write_manifest in scripts/generate.sh.
func computeManifest(t *testing.T, root string) []string {
	t.Helper()
	var files []string
	walk := func(dir string, keep func(string) bool) {
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() || !keep(path) {
				return err
			}
			rel, err := filepath.Rel(root, path)
			files = append(files, filepath.ToSlash(rel))
			return err
		})
		if err != nil {
			t.Fatalf("walk %s: %v", dir, err)
		}
	}
	walk("proto", func(p string) bool { return strings.HasSuffix(p, ".proto") || strings.HasSuffix(p, ".yaml") })
	walk("gen/prism", func(string) bool { return true })
	files = append(files, "scripts/generate.sh", "tools/protogen/go.mod", "tools/protogen/go.sum")
	slices.Sort(files)

	lines := make([]string, 0, len(files)+1)
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatalf("read %s: %v", f, err)
		}
		sum := sha256.Sum256(data)
		lines = append(lines, hex.EncodeToString(sum[:])+"  "+f)
	}
	toolsMod, err := os.ReadFile(filepath.Join(root, "tools", "go.mod"))
	if err != nil {
		t.Fatalf("read tools/go.mod: %v", err)
	}
	return append(lines, "version  "+bufVersion.FindString(string(toolsMod)))
}

// repoRoot returns the repository root, the parent of this package's directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatalf("find repository root: %v", err)
	}
	for _, f := range []string{"go.mod", "scripts/generate.sh", "proto/buf.yaml"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Fatalf("repository root %s: %v", root, err)
		}
	}
	return root
}
