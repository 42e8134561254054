package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// readTar returns the regular files of a tar and the order of all names.
func readTar(t *testing.T, r io.Reader) (map[string][]byte, map[string]*tar.Header, []string) {
	t.Helper()
	files, hdrs := map[string][]byte{}, map[string]*tar.Header{}
	var names []string
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files, hdrs, names
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		hdrs[h.Name] = h
		if h.Typeflag == tar.TypeReg {
			data, _ := io.ReadAll(tr)
			files[h.Name] = data
		}
	}
}

func sha(p []byte) string { return fmt.Sprintf("sha256:%x", sha256.Sum256(p)) }

func blobOf(files map[string][]byte, d string) []byte {
	return files["blobs/sha256/"+strings.TrimPrefix(d, "sha256:")]
}

func TestBuildArchiveOCI(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	os.WriteFile(src, []byte("streamed from disk"), 0o600)
	files := []File{
		{Path: "/usr/local/bin/app", Mode: 0o755, SourcePath: src},
		{Path: "etc/motd", Data: []byte("hi\n")},
		{Path: "/bin/sh", Mode: fs.ModeSymlink, Link: "busybox"},
		{Path: "/tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
	}
	cfg := Config{Entrypoint: []string{"/usr/local/bin/app"}, Cmd: []string{"-v"}, Env: []string{"A=B"}, WorkingDir: "/srv", User: "65534"}
	for _, compress := range []bool{true, false} {
		t.Run(fmt.Sprintf("gzip=%v", compress), func(t *testing.T) {
			var opts []Option
			if !compress {
				opts = append(opts, Uncompressed())
			}
			var buf bytes.Buffer
			res, err := BuildArchive(&buf, "example.com/team/app:v2", files, cfg, opts...)
			if err != nil {
				t.Fatal(err)
			}
			if res.Ref != "example.com/team/app:v2" {
				t.Errorf("ref %q", res.Ref)
			}
			out, _, names := readTar(t, bytes.NewReader(buf.Bytes()))
			if names[0] != "oci-layout" || names[len(names)-1] != "index.json" {
				t.Errorf("entries %v", names)
			}
			var idx ocispec.Index
			json.Unmarshal(out["index.json"], &idx)
			m := idx.Manifests[0]
			if m.Digest.String() != res.ManifestDigest || m.Annotations[AnnotationImageName] != "example.com/team/app:v2" ||
				m.Annotations[ocispec.AnnotationRefName] != "v2" || m.Platform.OS != "linux" {
				t.Errorf("index %+v", idx)
			}
			manifestJSON := blobOf(out, res.ManifestDigest)
			if sha(manifestJSON) != res.ManifestDigest {
				t.Fatal("manifest digest mismatch")
			}
			var man ocispec.Manifest
			json.Unmarshal(manifestJSON, &man)
			layer := blobOf(out, man.Layers[0].Digest.String())
			if sha(layer) != res.LayerDigest || int64(len(layer)) != man.Layers[0].Size {
				t.Fatal("layer digest or size mismatch")
			}
			wantMedia := ocispec.MediaTypeImageLayer
			plain := layer
			if compress {
				wantMedia = ocispec.MediaTypeImageLayerGzip
				zr, err := gzip.NewReader(bytes.NewReader(layer))
				if err != nil {
					t.Fatal(err)
				}
				plain, _ = io.ReadAll(zr)
			}
			if man.Layers[0].MediaType != wantMedia {
				t.Errorf("layer media type %s", man.Layers[0].MediaType)
			}
			var img ocispec.Image
			configJSON := blobOf(out, res.ConfigDigest)
			json.Unmarshal(configJSON, &img)
			if sha(configJSON) != res.ConfigDigest || len(img.RootFS.DiffIDs) != 1 || img.RootFS.DiffIDs[0].String() != sha(plain) || res.DiffID != sha(plain) {
				t.Errorf("diff_ids %v, want [%s]", img.RootFS.DiffIDs, sha(plain))
			}
			if !slices.Equal(img.Config.Entrypoint, cfg.Entrypoint) || img.Config.WorkingDir != "/srv" || img.Config.User != "65534" || img.Architecture == "" {
				t.Errorf("config %+v", img)
			}
			// The layer: parents added, sorted, modes and content kept.
			lf, lh, lnames := readTar(t, bytes.NewReader(plain))
			want := []string{"bin/", "bin/sh", "etc/", "etc/motd", "tmp/", "usr/", "usr/local/", "usr/local/bin/", "usr/local/bin/app"}
			if !slices.Equal(lnames, want) {
				t.Errorf("layer entries %v, want %v", lnames, want)
			}
			if string(lf["usr/local/bin/app"]) != "streamed from disk" || lh["usr/local/bin/app"].Mode != 0o755 || lh["etc/motd"].Mode != 0o644 {
				t.Errorf("files %q, modes %o %o", lf["usr/local/bin/app"], lh["usr/local/bin/app"].Mode, lh["etc/motd"].Mode)
			}
			if lh["bin/sh"].Linkname != "busybox" || lh["tmp/"].Mode != 0o1777 {
				t.Errorf("symlink %q, tmp mode %o", lh["bin/sh"].Linkname, lh["tmp/"].Mode)
			}
			// Reproducible.
			var again bytes.Buffer
			BuildArchive(&again, "example.com/team/app:v2", files, cfg, opts...)
			if !bytes.Equal(again.Bytes(), buf.Bytes()) {
				t.Error("two builds differ")
			}
		})
	}
}

func TestBuildArchiveDocker(t *testing.T) {
	var buf bytes.Buffer
	res, err := BuildArchive(&buf, "busybox", []File{{Path: "/hello", Data: []byte("x")}}, Config{Cmd: []string{"/hello"}}, WithFormat(FormatDocker))
	if err != nil {
		t.Fatal(err)
	}
	out, _, _ := readTar(t, &buf)
	var m []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(out["manifest.json"], &m); err != nil {
		t.Fatal(err)
	}
	if len(m) != 1 || !slices.Equal(m[0].RepoTags, []string{"busybox:latest"}) || sha(out[m[0].Config]) != res.ConfigDigest ||
		sha(out[m[0].Layers[0]]) != res.DiffID || res.DiffID != res.LayerDigest {
		t.Errorf("manifest.json %+v, result %+v", m, res)
	}
}

func TestBuildArchiveErrors(t *testing.T) {
	for name, files := range map[string][]File{
		"duplicate":        {{Path: "/a"}, {Path: "a"}},
		"dangling symlink": {{Path: "/l", Mode: fs.ModeSymlink}},
		"missing source":   {{Path: "/a", SourcePath: "/nonexistent/file"}},
	} {
		if _, err := BuildArchive(io.Discard, "x", files, Config{}); err == nil {
			t.Errorf("%s: built", name)
		}
	}
	if _, err := BuildArchive(io.Discard, "Bad Ref", nil, Config{}); err == nil {
		t.Error("bad ref built")
	}
}

func TestFilesFromFS(t *testing.T) {
	fsys := fstest.MapFS{
		"app/run.sh":  {Data: []byte("#!/bin/sh\n"), Mode: 0o755},
		"app/conf":    {Data: []byte("k=v")},
		"data":        {Mode: fs.ModeDir | 0o700},
		"app/current": {Data: []byte("run.sh"), Mode: fs.ModeSymlink},
	}
	files, err := FilesFromFS(fsys)
	if err != nil {
		t.Fatal(err)
	}
	byPath := map[string]File{}
	for _, f := range files {
		byPath[f.Path] = f
	}
	if f := byPath["app/run.sh"]; string(f.Data) != "#!/bin/sh\n" || f.Mode != 0o755 {
		t.Errorf("run.sh %+v", f)
	}
	if f := byPath["app/current"]; f.Link != "run.sh" || f.Mode&fs.ModeSymlink == 0 {
		t.Errorf("symlink %+v", f)
	}
	if f := byPath["data"]; !f.Mode.IsDir() || f.Mode.Perm() != 0o700 {
		t.Errorf("dir %+v", f)
	}
	if _, err := BuildArchive(io.Discard, "fs:1", files, Config{}); err != nil {
		t.Error(err)
	}
}

func TestBusyboxImage(t *testing.T) {
	if err := CheckStaticBusybox(); err != nil {
		t.Skipf("%v", err)
	}
	var buf bytes.Buffer
	res, err := BusyboxImage(&buf, "busybox:test")
	if err != nil {
		t.Fatal(err)
	}
	out, _, _ := readTar(t, &buf)
	zr, err := gzip.NewReader(bytes.NewReader(blobOf(out, res.LayerDigest)))
	if err != nil {
		t.Fatal(err)
	}
	lf, lh, _ := readTar(t, zr)
	st, _ := os.Stat(BusyboxPath)
	if int64(len(lf["bin/busybox"])) != st.Size() || lh["bin/busybox"].Mode != 0o755 {
		t.Errorf("busybox binary %d bytes mode %o", len(lf["bin/busybox"]), lh["bin/busybox"].Mode)
	}
	for _, applet := range []string{"sh", "sleep", "cat", "echo", "wget", "nslookup", "ls", "env", "id", "timeout"} {
		if h := lh["bin/"+applet]; h == nil || h.Linkname != "busybox" {
			t.Errorf("no /bin/%s symlink", applet)
		}
	}
	if !strings.Contains(string(lf["etc/passwd"]), "nobody:x:65534:65534") {
		t.Error("no nobody in /etc/passwd")
	}
}
