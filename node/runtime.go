package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/shoal-dev/shoal/node/container"
	"github.com/shoal-dev/shoal/node/container/containerd"
	"github.com/shoal-dev/shoal/node/container/logfile"
)

const containerdDir = "containerd"

// shimCgroup groups the containers' shims, runc calls and loggers for CPU
// (containerd.Config.ShimCgroup), next to the pods' own cgroups under
// /shoal, so that a burst of pod starts competes with the agent as one
// group rather than as some thirty runc and shim processes each weighing as
// much as the agent (a leader's Raft heartbeats went 230 ms without contact
// on the 2-core bench machine). Shared by the nodes of a `shoal local`
// cluster.
const shimCgroup = "/shoal/runtime"

// startRuntime connects the node to containerd: the daemon at
// --containerd-socket, or a private daemon the node starts and supervises
// under its data dir. Without containerd on the machine the node runs
// without a container runtime (it still serves the API and stores state)
// and says so.
func (n *Node) startRuntime(ctx context.Context) (stop func()) {
	cfg := containerd.DefaultConfig()
	var daemon *containerd.Daemon
	switch {
	case n.cfg.ContainerdSocket != "":
		cfg.Address = n.cfg.ContainerdSocket
	default:
		if _, err := exec.LookPath("containerd"); err != nil {
			n.log.Warn("containerd is not installed: this node runs no containers (install containerd or pass --containerd-socket)")
			return func() {}
		}
		dcfg := containerd.DefaultDaemonConfig(n.dir.path(containerdDir))
		dcfg.Logf = func(format string, args ...any) { n.log.Info("containerd: " + fmt.Sprintf(format, args...)) }
		d, err := containerd.StartDaemon(ctx, dcfg)
		if err != nil {
			n.log.Error("starting containerd: this node runs no containers", "err", err)
			return func() {}
		}
		daemon, cfg = d, d.RuntimeConfig()
	}
	cfg.Logf = func(format string, args ...any) { n.log.Info("runtime: " + fmt.Sprintf(format, args...)) }
	cfg.ShimCgroup = shimCgroup
	// Container output goes through `shoal container-logger`, a child of
	// the shim: it outlives this process and rotates the CRI-format logs.
	// The small shoal-logger next to the executable costs a container far
	// less than the full binary (package initialisation, memory).
	if exe, err := os.Executable(); err == nil {
		cfg.LogBinary, cfg.LogBinaryArgs = exe, []string{logfile.LoggerCommand}
		if small := filepath.Join(filepath.Dir(exe), "shoal-logger"); isExecutable(small) {
			cfg.LogBinary = small
		}
	} else {
		n.log.Warn("container logs are not rotated: cannot find the shoal executable", "err", err)
	}
	rt, err := containerd.New(ctx, cfg)
	if err != nil {
		n.log.Error("connecting to containerd: this node runs no containers", "err", err)
		if daemon != nil {
			_ = daemon.Stop(context.Background())
		}
		return func() {}
	}
	n.runtime = rt
	n.registry = rt.RegistryHandler()
	if v, err := rt.Client().Version(ctx); err == nil {
		n.runtimeVersion = "containerd://" + v.Version
	}
	return func() {
		_ = rt.Close()
		if daemon != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = daemon.Stop(sctx)
		}
	}
}

// nodeImages lists the images this node holds, for Node.status.images.
func (n *Node) nodeImages(ctx context.Context) []corev1.ContainerImage {
	if n.runtime == nil {
		return nil
	}
	imgs, err := n.runtime.ListImages(ctx)
	if err != nil {
		n.log.Warn("listing images", "err", err)
		return nil
	}
	out := make([]corev1.ContainerImage, 0, len(imgs))
	for _, im := range imgs {
		names := []string{im.Ref}
		if im.Digest != "" {
			names = append(names, im.Ref+"@"+im.Digest)
		}
		out = append(out, corev1.ContainerImage{Names: names, SizeBytes: im.Size})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Names[0] < out[j].Names[0] })
	return out
}

// ImageInfo is one line of `shoal image ls`.
type ImageInfo struct {
	Ref     string `json:"ref"`
	Digest  string `json:"digest"`
	ImageID string `json:"imageID"`
	Size    int64  `json:"size"`
}

// maxImageArchive bounds an imported archive.
const maxImageArchive = 8 << 30

// handleImages imports an image archive (POST, the body is the archive) or
// lists the node's images (GET).
func (n *Node) handleImages(w http.ResponseWriter, r *http.Request) {
	if n.runtime == nil {
		writeJSON(w, http.StatusServiceUnavailable, joinError{Message: "this node has no container runtime (containerd)"})
		return
	}
	var imgs []container.Image
	var err error
	switch r.Method {
	case http.MethodPost:
		start := time.Now()
		imgs, err = n.runtime.ImportImage(r.Context(), io.LimitReader(r.Body, maxImageArchive))
		// The importer stops at the archive's end; the rest of the body (a
		// tar's zero padding) is read too, so that closing the connection
		// with bytes unread does not reset it under the client reading
		// the answer.
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
		if err == nil {
			n.log.Info("imported images", "count", len(imgs), "took", time.Since(start).Round(time.Millisecond))
			regStart := time.Now()
			if rerr := n.registerNode(r.Context()); rerr != nil {
				n.log.Warn("updating Node images", "err", rerr)
			} else if d := time.Since(regStart); d > time.Second {
				n.log.Warn("updating Node images was slow", "took", d.Round(time.Millisecond))
			}
			// Record an answer that could not be sent: the import is done
			// but the client will not know it.
			defer func() {
				if ferr := http.NewResponseController(w).Flush(); ferr != nil {
					n.log.Warn("answering an image import", "err", ferr, "since", time.Since(start).Round(time.Millisecond))
				}
			}()
		}
	case http.MethodGet:
		imgs, err = n.runtime.ListImages(r.Context())
	default:
		writeJSON(w, http.StatusMethodNotAllowed, joinError{Message: "GET or POST"})
		return
	}
	if err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, container.ErrInvalid) {
			code = http.StatusBadRequest
		}
		writeJSON(w, code, joinError{Message: err.Error()})
		return
	}
	out := make([]ImageInfo, 0, len(imgs))
	for _, im := range imgs {
		out = append(out, ImageInfo{Ref: im.Ref, Digest: im.Digest, ImageID: im.ConfigDigest, Size: im.Size})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref < out[j].Ref })
	writeJSON(w, http.StatusOK, out)
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}
