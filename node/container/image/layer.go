package image

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"time"
)

// File is one entry of a layer.
type File struct {
	Path string // path in the image; a leading "/" is optional
	// Mode holds the permission bits, plus fs.ModeDir for a directory or
	// fs.ModeSymlink for a symlink; 0 means 0644 for files, 0755 for dirs.
	Mode       fs.FileMode
	Data       []byte // content of a regular file...
	SourcePath string // ...or the host file to stream it from
	Link       string // target of a symlink
	UID, GID   int
}

// FilesFromFS walks fsys and returns its directories, regular files and
// symlinks (when fsys supports fs.ReadLinkFS) as Files, with their content.
func FilesFromFS(fsys fs.FS) ([]File, error) {
	var files []File
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == "." {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		f := File{Path: p, Mode: info.Mode() & (fs.ModePerm | fs.ModeDir | fs.ModeSymlink | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)}
		switch {
		case d.IsDir():
		case info.Mode()&fs.ModeSymlink != 0:
			rl, ok := fsys.(fs.ReadLinkFS)
			if !ok {
				return fmt.Errorf("%s: symlink, and the fs cannot read links", p)
			}
			if f.Link, err = rl.ReadLink(p); err != nil {
				return err
			}
		case info.Mode().IsRegular():
			if f.Data, err = fs.ReadFile(fsys, p); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: unsupported file type %v", p, info.Mode().Type())
		}
		files = append(files, f)
		return nil
	})
	return files, err
}

// layerInfo describes a written layer blob.
type layerInfo struct {
	diffID string // sha256 of the uncompressed tar
	digest string // sha256 of the blob as stored
	size   int64
}

// writeLayer writes files as a tar (gzipped if compress) to w.
func writeLayer(w io.Writer, files []File, compress bool, mtime time.Time) (layerInfo, error) {
	blobHash := sha256.New()
	counter := &countWriter{}
	blob := io.MultiWriter(w, blobHash, counter)
	var gz *gzip.Writer
	tarOut := blob
	if compress {
		gz, _ = gzip.NewWriterLevel(blob, gzip.BestSpeed)
		gz.ModTime = mtime
		tarOut = gz
	}
	diffHash := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(tarOut, diffHash))
	entries, err := normalize(files)
	if err != nil {
		return layerInfo{}, err
	}
	for _, f := range entries {
		if err := writeEntry(tw, f, mtime); err != nil {
			return layerInfo{}, fmt.Errorf("layer entry %s: %w", f.Path, err)
		}
	}
	if err := tw.Close(); err != nil {
		return layerInfo{}, err
	}
	if gz != nil {
		if err := gz.Close(); err != nil {
			return layerInfo{}, err
		}
	}
	return layerInfo{diffID: hexDigest(diffHash), digest: hexDigest(blobHash), size: counter.n}, nil
}

// normalize cleans paths, adds missing parent directories and sorts.
func normalize(files []File) ([]File, error) {
	byPath := make(map[string]File, len(files))
	for _, f := range files {
		p := strings.TrimPrefix(path.Clean("/"+f.Path), "/")
		if p == "" {
			continue
		}
		if _, dup := byPath[p]; dup {
			return nil, fmt.Errorf("layer entry %s given twice", p)
		}
		f.Path = p
		byPath[p] = f
	}
	for p := range byPath {
		for dir := path.Dir(p); dir != "."; dir = path.Dir(dir) {
			if _, ok := byPath[dir]; !ok {
				byPath[dir] = File{Path: dir, Mode: fs.ModeDir | 0o755}
			}
		}
	}
	out := make([]File, 0, len(byPath))
	for _, f := range byPath {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

func writeEntry(tw *tar.Writer, f File, mtime time.Time) error {
	perm := int64(f.Mode & (fs.ModePerm))
	if f.Mode&fs.ModeSetuid != 0 {
		perm |= 0o4000
	}
	if f.Mode&fs.ModeSetgid != 0 {
		perm |= 0o2000
	}
	if f.Mode&fs.ModeSticky != 0 {
		perm |= 0o1000
	}
	hdr := &tar.Header{Name: f.Path, Mode: perm, Uid: f.UID, Gid: f.GID, ModTime: mtime, Format: tar.FormatPAX}
	switch {
	case f.Mode&fs.ModeDir != 0:
		hdr.Typeflag, hdr.Name = tar.TypeDir, f.Path+"/"
		if perm == 0 {
			hdr.Mode = 0o755
		}
		return tw.WriteHeader(hdr)
	case f.Mode&fs.ModeSymlink != 0:
		if f.Link == "" {
			return fmt.Errorf("symlink without a target")
		}
		hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, f.Link, 0o777
		return tw.WriteHeader(hdr)
	}
	if perm == 0 {
		hdr.Mode = 0o644
	}
	hdr.Typeflag = tar.TypeReg
	if f.SourcePath == "" {
		hdr.Size = int64(len(f.Data))
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err := tw.Write(f.Data)
		return err
	}
	src, err := os.Open(f.SourcePath)
	if err != nil {
		return err
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("source %s is not a regular file", f.SourcePath)
	}
	hdr.Size = st.Size()
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if n, err := io.Copy(tw, src); err != nil {
		return err
	} else if n != hdr.Size {
		return fmt.Errorf("source %s changed size while read", f.SourcePath)
	}
	return nil
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

func hexDigest(h hash.Hash) string { return fmt.Sprintf("sha256:%x", h.Sum(nil)) }
