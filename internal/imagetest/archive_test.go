package imagetest_test

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// imageFile is one entry of an image's flattened file tree.
type imageFile struct {
	hdr  *tar.Header
	data []byte // contents of small regular files
}

// smallFile bounds the files whose contents are kept (passwd, group, the CA bundle).
const smallFile = 1 << 20

// imageFiles flattens the layers of a `podman save --format docker-archive` tarball into one
// file tree keyed by absolute path, applying whiteouts as a container runtime would.
func imageFiles(t *testing.T, archive string) map[string]imageFile {
	t.Helper()
	var manifest []struct{ Layers []string }
	require.NoError(t, json.Unmarshal(readMember(t, archive, "manifest.json"), &manifest))
	require.Len(t, manifest, 1)
	files := map[string]imageFile{}
	for _, layer := range manifest[0].Layers {
		applyLayer(t, archive, layer, files)
	}
	return files
}

func readMember(t *testing.T, archive, name string) []byte {
	t.Helper()
	var out []byte
	walkMember(t, archive, name, func(r io.Reader) {
		b, err := io.ReadAll(r)
		require.NoError(t, err)
		out = b
	})
	require.NotNil(t, out, "%s has no %s", archive, name)
	return out
}

// walkMember calls fn with the contents of the member name of the tar file archive.
func walkMember(t *testing.T, archive, name string, fn func(io.Reader)) {
	t.Helper()
	f, err := os.Open(archive)
	require.NoError(t, err)
	defer func() { _ = f.Close() }()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		require.NoError(t, err)
		if path.Clean(hdr.Name) == path.Clean(name) {
			fn(tr)
			return
		}
	}
}

func applyLayer(t *testing.T, archive, layer string, files map[string]imageFile) {
	t.Helper()
	found := false
	walkMember(t, archive, layer, func(r io.Reader) {
		found = true
		tr := tar.NewReader(r)
		for {
			hdr, err := tr.Next()
			if errors.Is(err, io.EOF) {
				return
			}
			require.NoError(t, err)
			name := path.Clean("/" + hdr.Name)
			dir, base := path.Split(name)
			if strings.HasPrefix(base, ".wh.") {
				gone := path.Join(dir, strings.TrimPrefix(base, ".wh."))
				for p := range files {
					if p == gone || strings.HasPrefix(p, gone+"/") {
						delete(files, p)
					}
				}
				continue
			}
			entry := imageFile{hdr: hdr}
			if hdr.Typeflag == tar.TypeReg && hdr.Size <= smallFile {
				entry.data, err = io.ReadAll(tr)
				require.NoError(t, err)
			}
			files[name] = entry
		}
	})
	require.True(t, found, "%s has no layer %s", archive, layer)
}
