package containerd

import (
	"context"
	"fmt"
	"maps"

	ctd "github.com/containerd/containerd"
	runcopts "github.com/containerd/containerd/api/types/runc/options"

	"github.com/shoal-dev/shoal/node/container"
)

// CreateContainer implements container.Runtime.
func (r *Runtime) CreateContainer(ctx context.Context, spec container.ContainerSpec) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	if (spec.Stdin || spec.TTY) && r.cfg.LogBinary == "" {
		return fmt.Errorf("creating container %s: stdin and tty need a logging binary (Config.LogBinary): %w", spec.ID, container.ErrInvalid)
	}
	unlock, err := r.lock(ctx, spec.ID)
	if err != nil {
		return err
	}
	defer unlock()
	ctx = r.ns(ctx)

	if _, err := r.client.ContainerService().Get(ctx, spec.ID); err == nil {
		return fmt.Errorf("creating container %s: %w", spec.ID, container.ErrAlreadyExists)
	} else if !isNotFound(err) {
		return wrapErr(err, "creating container %s", spec.ID)
	}
	img, err := r.image(ctx, spec.Image)
	if err != nil {
		return fmt.Errorf("creating container %s: %w", spec.ID, err)
	}
	info, err := r.rootfs(ctx, img, false)
	if err != nil {
		return fmt.Errorf("creating container %s: %w", spec.ID, err)
	}

	labels := maps.Clone(spec.Labels)
	if labels == nil {
		labels = make(map[string]string)
	}
	labels[labelImageID] = info.cfgDesc.Digest.String()
	if spec.LogPath != "" {
		labels[labelLogPath] = spec.LogPath
	}
	stopSignal := info.config.Config.StopSignal
	if stopSignal == "" {
		stopSignal = "SIGTERM"
	}
	labels[ctd.StopSignalLabel] = stopSignal
	stdioLabels(spec, labels)

	create := func() error {
		_, err := r.client.NewContainer(ctx, spec.ID,
			ctd.WithContainerLabels(labels),
			ctd.WithSnapshotter(r.cfg.Snapshotter),
			withRootfsSnapshot(spec.ID, info.parent, img.Name()),
			ctd.WithRuntime(r.cfg.Runtime, r.runcOptions()),
			ctd.WithNewSpec(r.specOpts(spec, info.config.Config)...),
		)
		return err
	}
	err = create()
	if err != nil && isNotFound(err) {
		// The parent snapshot is gone (the image was removed and collected,
		// then imported again): read and unpack the image afresh.
		r.rootfsInfos.forget(img)
		if info, err = r.rootfs(ctx, img, true); err != nil {
			return fmt.Errorf("creating container %s: %w", spec.ID, err)
		}
		err = create()
	}
	if err != nil && r.dropOrphanSnapshot(ctx, spec.ID) && isAlreadyExists(err) {
		// The snapshot was left by a create that died half way: retry.
		err = create()
		if err != nil {
			r.dropOrphanSnapshot(ctx, spec.ID)
		}
	}
	return wrapErr(err, "creating container %s", spec.ID)
}

// dropOrphanSnapshot removes the snapshot named id unless a container owns
// it, and reports whether it did.
func (r *Runtime) dropOrphanSnapshot(ctx context.Context, id string) bool {
	if _, err := r.client.ContainerService().Get(ctx, id); !isNotFound(err) {
		return false
	}
	err := r.client.SnapshotService(r.cfg.Snapshotter).Remove(ctx, id)
	return err == nil
}

func (r *Runtime) runcOptions() *runcopts.Options {
	return &runcopts.Options{Root: r.cfg.RuncRoot, ShimCgroup: r.cfg.ShimCgroup}
}
