package containertest

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/shoal-dev/shoal/node/container"
)

// The fake reads just enough of an archive to name its images and know
// their configs, with the real runtime's naming rules: OCI layouts
// (index.json, annotations io.containerd.image.name or a reference in
// org.opencontainers.image.ref.name, else the manifest digest) and
// docker-save tarballs (manifest.json RepoTags).

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations"`
}

type ociIndex struct {
	Manifests []descriptor `json:"manifests"`
}

type ociManifest struct {
	MediaType string       `json:"mediaType"`
	Config    descriptor   `json:"config"`
	Layers    []descriptor `json:"layers"`
	Manifests []descriptor `json:"manifests"` // when it is an index
}

type imageConfigFile struct {
	Config struct {
		Entrypoint []string
		Cmd        []string
		Env        []string
		WorkingDir string
		User       string
		StopSignal string
		Labels     map[string]string
	} `json:"config"`
}

type dockerEntry struct {
	Config   string
	RepoTags []string
}

func readArchive(r io.Reader) ([]container.Image, error) {
	files := make(map[string][]byte)
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return nil, err
		}
		files[path.Clean(hdr.Name)] = data
	}
	if data, ok := files["index.json"]; ok {
		return readOCI(files, data)
	}
	if data, ok := files["manifest.json"]; ok {
		return readDocker(files, data)
	}
	return nil, errors.New("neither an OCI layout nor a docker-save archive")
}

func readOCI(files map[string][]byte, indexJSON []byte) ([]container.Image, error) {
	var idx ociIndex
	if err := json.Unmarshal(indexJSON, &idx); err != nil {
		return nil, fmt.Errorf("index.json: %w", err)
	}
	var out []container.Image
	for _, m := range idx.Manifests {
		name := m.Annotations["io.containerd.image.name"]
		if name == "" {
			name = container.RefFromAnnotation(m.Annotations["org.opencontainers.image.ref.name"])
		}
		if name == "" {
			name = m.Digest
		}
		cfgDigest, cfg, size, err := followManifest(files, m.Digest)
		if err != nil {
			return nil, err
		}
		img := container.Image{Ref: name, Digest: m.Digest, ConfigDigest: cfgDigest, Size: size, Config: cfg}
		out = append(out, img)
	}
	return out, nil
}

// followManifest reads a manifest (or the first manifest of an index) and
// its config.
func followManifest(files map[string][]byte, digest string) (string, container.ImageConfig, int64, error) {
	data, err := blob(files, digest)
	if err != nil {
		return "", container.ImageConfig{}, 0, err
	}
	var m ociManifest
	if err := json.Unmarshal(data, &m); err != nil {
		return "", container.ImageConfig{}, 0, fmt.Errorf("manifest %s: %w", digest, err)
	}
	if len(m.Manifests) > 0 {
		return followManifest(files, m.Manifests[0].Digest)
	}
	cfgData, err := blob(files, m.Config.Digest)
	if err != nil {
		return "", container.ImageConfig{}, 0, err
	}
	size := int64(len(data)) + int64(len(cfgData))
	for _, l := range m.Layers {
		size += l.Size
	}
	cfg, err := parseConfig(cfgData)
	return m.Config.Digest, cfg, size, err
}

func readDocker(files map[string][]byte, manifestJSON []byte) ([]container.Image, error) {
	var entries []dockerEntry
	if err := json.Unmarshal(manifestJSON, &entries); err != nil {
		return nil, fmt.Errorf("manifest.json: %w", err)
	}
	var out []container.Image
	for _, e := range entries {
		cfgData, ok := files[path.Clean(e.Config)]
		if !ok {
			return nil, fmt.Errorf("missing config %s", e.Config)
		}
		cfg, err := parseConfig(cfgData)
		if err != nil {
			return nil, err
		}
		cfgDigest := fmt.Sprintf("sha256:%x", sha256.Sum256(cfgData))
		for _, tag := range e.RepoTags {
			name, err := container.NormalizeRef(tag)
			if err != nil {
				return nil, err
			}
			out = append(out, container.Image{Ref: name, Digest: fakeDigest("manifest", name), ConfigDigest: cfgDigest, Size: int64(len(cfgData)), Config: cfg})
		}
	}
	return out, nil
}

func blob(files map[string][]byte, digest string) ([]byte, error) {
	data, ok := files["blobs/"+strings.Replace(digest, ":", "/", 1)]
	if !ok {
		return nil, fmt.Errorf("missing blob %s", digest)
	}
	return data, nil
}

func parseConfig(data []byte) (container.ImageConfig, error) {
	var f imageConfigFile
	if err := json.Unmarshal(data, &f); err != nil {
		return container.ImageConfig{}, fmt.Errorf("image config: %w", err)
	}
	c := f.Config
	return container.ImageConfig{Entrypoint: c.Entrypoint, Cmd: c.Cmd, Env: c.Env, WorkingDir: c.WorkingDir, User: c.User, StopSignal: c.StopSignal, Labels: c.Labels}, nil
}
