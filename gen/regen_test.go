//go:build regen

package gen_test

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// These checks compile and run buf (minutes on a cold cache), so they run in make lint
// (go test -tags regen ./gen), not in make test; make test checks gen/inputs.sha256 instead.

// The generated tree compared against a fresh run of the generator.
const generatedDir = "prism"

// TestGeneratedCodeIsCurrent regenerates the code with the pinned tools into a
// temporary directory and requires it to match gen/ byte for byte.
func TestGeneratedCodeIsCurrent(t *testing.T) {
	root := repoRoot(t)
	out := t.TempDir()
	runScript(t, root, "generate.sh", out)

	want := readTree(t, filepath.Join(out, "gen", generatedDir))
	got := readTree(t, filepath.Join(root, "gen", generatedDir))
	if len(want) == 0 {
		t.Fatalf("scripts/generate.sh produced no files under %s", filepath.Join(out, "gen", generatedDir))
	}

	var problems []string
	for _, name := range sortedKeys(want) {
		committed, ok := got[name]
		switch {
		case !ok:
			problems = append(problems, "missing: gen/"+generatedDir+"/"+name)
		case !bytes.Equal(committed, want[name]):
			problems = append(problems, "differs: gen/"+generatedDir+"/"+name+firstDifference(committed, want[name]))
		}
	}
	for _, name := range sortedKeys(got) {
		if _, ok := want[name]; !ok {
			problems = append(problems, "not generated from any .proto: gen/"+generatedDir+"/"+name)
		}
	}
	if len(problems) > 0 {
		t.Fatalf("generated code is stale; run `make generate` (bash scripts/generate.sh) and commit the result:\n  %s",
			strings.Join(problems, "\n  "))
	}
}

// TestProtoLint requires the .proto files to pass buf lint and buf format.
func TestProtoLint(t *testing.T) {
	runScript(t, repoRoot(t), "buf-lint.sh")
}

// runScript runs scripts/<name> with bash from the repository root and fails
// the test, showing its output, when it exits non-zero.
func runScript(t *testing.T, root, name string, args ...string) {
	t.Helper()
	argv := append([]string{filepath.Join("scripts", name)}, args...)
	cmd := exec.CommandContext(t.Context(), "bash", argv...)
	cmd.Dir = root
	output, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bash %s: %v\n%s", strings.Join(argv, " "), err, output)
	}
}

// readTree returns the contents of every regular file under dir, keyed by
// slash-separated path relative to dir. A missing dir reads as empty.
func readTree(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := make(map[string][]byte)
	tree := os.DirFS(dir)
	err := fs.WalkDir(tree, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		data, err := fs.ReadFile(tree, path)
		files[path] = data
		return err
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("read %s: %v", dir, err)
	}
	return files
}

// firstDifference describes the first line where committed and fresh differ.
func firstDifference(committed, fresh []byte) string {
	a := strings.Split(string(committed), "\n")
	b := strings.Split(string(fresh), "\n")
	for i := range max(len(a), len(b)) {
		var la, lb string
		if i < len(a) {
			la = a[i]
		}
		if i < len(b) {
			lb = b[i]
		}
		if la != lb {
			return fmt.Sprintf("\n      line %d committed: %q\n      line %d generated: %q", i+1, la, i+1, lb)
		}
	}
	return " (line endings or trailing bytes)"
}

func sortedKeys(m map[string][]byte) []string {
	return slices.Sorted(maps.Keys(m))
}
