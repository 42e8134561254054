package containerd

import (
	"context"
	"os"
	"path"
	"slices"
	"strings"

	"github.com/containerd/containerd/containers"
	"github.com/containerd/containerd/oci"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/shoal-dev/shoal/node/container"
)

// defaultEnv is the environment of images that set none.
var defaultEnv = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

// specOpts turns a validated ContainerSpec and its image config into OCI
// spec options, applied over containerd's default spec.
func (r *Runtime) specOpts(spec container.ContainerSpec, img ocispec.ImageConfig) []oci.SpecOpts {
	sec := spec.Security
	opts := []oci.SpecOpts{
		withProcess(spec, img),
		oci.WithEnv(spec.Env),
		withoutRlimits,
	}
	if spec.Hostname != "" {
		opts = append(opts, oci.WithHostname(spec.Hostname))
	}
	if spec.NetNSPath != "" {
		opts = append(opts, oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: spec.NetNSPath}))
	}
	if len(spec.Mounts) > 0 {
		opts = append(opts, withMounts(spec.Mounts))
	}
	opts = append(opts, resourceOpts(spec.Resources)...)

	// User: RunAsUser/RunAsGroup win over the image's User.
	switch u, g := sec.RunAsUser, sec.RunAsGroup; {
	case u != nil && g != nil:
		opts = append(opts, oci.WithUIDGID(uint32(*u), uint32(*g)))
	case u != nil:
		opts = append(opts, oci.WithUserID(uint32(*u)))
	default:
		if img.User != "" {
			opts = append(opts, oci.WithUser(img.User))
		}
		if g != nil {
			opts = append(opts, withGID(uint32(*g)))
		}
	}
	if sec.ReadOnlyRootFS {
		opts = append(opts, oci.WithRootFSReadonly())
	}
	if sec.Privileged {
		opts = append(opts, oci.WithPrivileged, oci.WithAllDevicesAllowed, oci.WithHostDevices)
	}
	opts = append(opts, withCapabilities(sec), withNoNewPrivileges(sec.NoNewPrivileges()))

	parent := spec.CgroupParent
	if parent == "" {
		parent = r.cgroupParent()
	}
	return append(opts, oci.WithCgroup(path.Join(parent, spec.ID)))
}

func (r *Runtime) cgroupParent() string {
	if r.cfg.CgroupParent != "" {
		return r.cfg.CgroupParent
	}
	return "/" + r.cfg.Namespace
}

// withProcess sets args, environment and working directory the Kubernetes
// way from the spec and the image config.
func withProcess(spec container.ContainerSpec, img ocispec.ImageConfig) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		var args []string
		switch {
		case len(spec.Command) > 0:
			args = append(slices.Clone(spec.Command), spec.Args...)
		case len(spec.Args) > 0:
			args = append(slices.Clone(img.Entrypoint), spec.Args...)
		default:
			args = append(slices.Clone(img.Entrypoint), img.Cmd...)
		}
		s.Process.Args = args
		env := img.Env
		if len(env) == 0 {
			env = defaultEnv
		}
		s.Process.Env = slices.Clone(env)
		s.Process.Cwd = "/"
		if img.WorkingDir != "" {
			s.Process.Cwd = img.WorkingDir
		}
		if spec.WorkingDir != "" {
			s.Process.Cwd = spec.WorkingDir
		}
		// A terminal, and TERM for it unless the image sets one (the
		// spec's Env, applied next, wins over both).
		s.Process.Terminal = spec.TTY
		if spec.TTY && !slices.ContainsFunc(s.Process.Env, func(e string) bool { return strings.HasPrefix(e, "TERM=") }) {
			s.Process.Env = append(s.Process.Env, "TERM=xterm")
		}
		return nil
	}
}

// withoutRlimits drops containerd's RLIMIT_NOFILE=1024 default: containers
// inherit the shim's limits, as under Kubernetes' CRI.
func withoutRlimits(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
	s.Process.Rlimits = nil
	return nil
}

func withGID(gid uint32) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		s.Process.User.GID = gid
		return nil
	}
}

func withNoNewPrivileges(on bool) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		s.Process.NoNewPrivileges = on
		return nil
	}
}

// withCapabilities applies CapAdd/CapDrop over the default set (every
// capability when privileged).
func withCapabilities(sec container.Security) oci.SpecOpts {
	return func(ctx context.Context, c oci.Client, ctr *containers.Container, s *oci.Spec) error {
		if len(sec.CapAdd) == 0 && len(sec.CapDrop) == 0 {
			return nil
		}
		var base []string
		if s.Process.Capabilities != nil {
			base = s.Process.Capabilities.Bounding
		}
		return oci.WithCapabilities(sec.ApplyCapabilities(base))(ctx, c, ctr, s)
	}
}

// withMounts adds the spec's mounts, replacing default mounts at the same
// destination.
func withMounts(mounts []container.Mount) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		for _, m := range mounts {
			dst := path.Clean(m.Destination)
			s.Mounts = slices.DeleteFunc(s.Mounts, func(x specs.Mount) bool { return path.Clean(x.Destination) == dst })
			mode := "rw"
			if m.ReadOnly {
				mode = "ro"
			}
			if m.Type == container.MountTmpfs {
				s.Mounts = append(s.Mounts, specs.Mount{Destination: dst, Type: "tmpfs", Source: "tmpfs",
					Options: []string{"nosuid", "nodev", "mode=1777", mode}})
				continue
			}
			s.Mounts = append(s.Mounts, specs.Mount{Destination: dst, Type: "bind", Source: m.Source,
				Options: []string{"rbind", "rprivate", mode}})
		}
		return nil
	}
}

func resourceOpts(res container.Resources) []oci.SpecOpts {
	var opts []oci.SpecOpts
	if res.MemoryLimitBytes > 0 {
		opts = append(opts, oci.WithMemoryLimit(uint64(res.MemoryLimitBytes)))
		if swapAccounting() {
			// memory+swap = memory: a container never swaps.
			opts = append(opts, oci.WithMemorySwap(res.MemoryLimitBytes))
		}
	}
	if res.CPUQuota > 0 {
		period := res.CPUPeriod
		if period == 0 {
			period = 100000
		}
		opts = append(opts, oci.WithCPUCFS(res.CPUQuota, uint64(period)))
	}
	if res.CPUShares > 0 {
		opts = append(opts, oci.WithCPUShares(uint64(res.CPUShares)))
	}
	return opts
}

// swapAccounting reports whether runc can set a memory+swap limit.
func swapAccounting() bool {
	for _, p := range []string{"/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes", "/sys/fs/cgroup/cgroup.controllers"} {
		if _, err := os.Stat(p); err == nil {
			return true
		}
	}
	return false
}
