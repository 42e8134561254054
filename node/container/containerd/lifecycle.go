package containerd

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"syscall"
	"time"

	ctd "github.com/containerd/containerd"
	tasks "github.com/containerd/containerd/api/services/tasks/v1"
	apitask "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/containers"
	"github.com/moby/sys/signal"
)

// StartContainer implements container.Runtime.
func (r *Runtime) StartContainer(ctx context.Context, id string) error {
	unlock, err := r.lock(ctx, id)
	if err != nil {
		return err
	}
	defer unlock()
	ctx = r.ns(ctx)
	c, err := r.client.LoadContainer(ctx, id)
	if err != nil {
		return wrapErr(err, "starting container %s", id)
	}
	rec, _ := c.Info(ctx, ctd.WithoutRefreshedMetadata)
	proc, err := r.process(ctx, id)
	if err != nil {
		return wrapErr(err, "starting container %s", id)
	}
	if proc != nil {
		if alive(proc) {
			return nil
		}
		// The previous run is over (or never started): clear it away.
		if err := r.deleteTask(ctx, c, rec); err != nil {
			return fmt.Errorf("starting container %s: %w", id, err)
		}
	}

	creator := cio.NullIO
	var logger *loggerProc
	lp := rec.Labels[labelLogPath]
	switch st := stdioOf(rec.Labels); {
	case st.fifos():
		set, err := r.prepareFIFOs(id, st)
		if err != nil {
			return fmt.Errorf("starting container %s: %w", id, err)
		}
		if logger, err = r.startLogger(id, set, lp); err != nil {
			return fmt.Errorf("starting container %s: %w", id, err)
		}
		creator = set.creator()
	case lp != "":
		if creator, err = r.logIO(lp); err != nil {
			return fmt.Errorf("starting container %s: %w", id, err)
		}
	}
	tctx, stopWatch := ctx, func() {}
	if logger != nil {
		tctx, stopWatch = logger.untilExit(ctx)
	}
	task, err := c.NewTask(tctx, creator, r.withRuncRoot)
	loggerGone := errors.Is(context.Cause(tctx), errLoggerExited)
	stopWatch()
	if err != nil {
		if logger != nil {
			logger.kill()
			if loggerGone {
				err = fmt.Errorf("%w (see %s)", errLoggerExited, filepath.Join(r.stdioDir(id), loggerLogFile))
			}
		}
		return wrapErr(err, "starting container %s", id)
	}
	r.startWaiter(id) // wait before start: the exit cannot be missed
	if err := task.Start(ctx); err != nil {
		r.dropWaiter(id, true)
		cctx, cancel := cleanupContext(ctx)
		defer cancel()
		if _, derr := task.Delete(cctx, ctd.WithProcessKill); derr != nil && !isNotFound(derr) {
			r.cfg.logf("containerd: deleting task of %s after a failed start: %v", id, derr)
		}
		r.removeCgroup(rec)
		return wrapErr(err, "starting container %s", id)
	}
	if _, err := c.SetLabels(ctx, startLabels(time.Now())); err != nil {
		r.cfg.logf("containerd: recording start of %s: %v", id, err)
	}
	return nil
}

func (r *Runtime) withRuncRoot(_ context.Context, _ *ctd.Client, ti *ctd.TaskInfo) error {
	ti.Options = r.runcOptions()
	return nil
}

// StopContainer implements container.Runtime.
func (r *Runtime) StopContainer(ctx context.Context, id string, grace time.Duration) error {
	unlock, err := r.lock(ctx, id)
	if err != nil {
		return err
	}
	defer unlock()
	ctx = r.ns(ctx)
	c, err := r.client.LoadContainer(ctx, id)
	if err != nil {
		return wrapErr(err, "stopping container %s", id)
	}
	proc, err := r.process(ctx, id)
	if err != nil {
		return wrapErr(err, "stopping container %s", id)
	}
	if proc == nil || proc.Status == apitask.Status_STOPPED {
		return nil
	}
	if proc.Status == apitask.Status_CREATED {
		// A start that died half way; nothing runs yet.
		return r.killAndWait(ctx, c)
	}
	rec, _ := c.Info(ctx, ctd.WithoutRefreshedMetadata)
	sig, err := signal.ParseSignal(rec.Labels[ctd.StopSignalLabel])
	if err != nil || sig == 0 {
		sig = syscall.SIGTERM
	}
	if grace > 0 {
		exited, err := r.signalAndWait(ctx, c, sig, grace)
		if err != nil {
			return fmt.Errorf("stopping container %s: %w", id, err)
		}
		if exited {
			return r.awaitWaiter(ctx, id)
		}
	}
	if err := r.killAndWait(ctx, c); err != nil {
		return fmt.Errorf("stopping container %s: %w", id, err)
	}
	return r.awaitWaiter(ctx, id)
}

// signalAndWait sends sig to the main process and waits up to timeout for
// it to exit.
func (r *Runtime) signalAndWait(ctx context.Context, c ctd.Container, sig syscall.Signal, timeout time.Duration) (bool, error) {
	task, err := c.Task(ctx, nil)
	if isNotFound(err) {
		return true, nil
	} else if err != nil {
		return false, wrapErr(err, "loading task")
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	statusC, err := task.Wait(wctx) // before Kill, so the exit is not missed
	if err != nil {
		return false, wrapErr(err, "waiting for task")
	}
	if err := task.Kill(ctx, sig); err != nil {
		if isNotFound(err) {
			return true, nil
		}
		return false, wrapErr(err, "signalling %v", sig)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case st := <-statusC:
		return st.Error() == nil, nil
	case <-timer.C:
		return false, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// killAndWait SIGKILLs the main process and waits for its exit.
func (r *Runtime) killAndWait(ctx context.Context, c ctd.Container) error {
	task, err := c.Task(ctx, nil)
	if isNotFound(err) {
		return nil
	} else if err != nil {
		return wrapErr(err, "loading task")
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	statusC, err := task.Wait(wctx)
	if err != nil {
		return wrapErr(err, "waiting for task")
	}
	if err := task.Kill(ctx, syscall.SIGKILL); err != nil {
		if isNotFound(err) {
			return nil
		}
		return wrapErr(err, "killing task")
	}
	select {
	case st := <-statusC:
		if err := st.Error(); err != nil && !isNotFound(err) {
			return wrapErr(err, "waiting for task")
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// RemoveContainer implements container.Runtime.
func (r *Runtime) RemoveContainer(ctx context.Context, id string) error {
	unlock, err := r.lock(ctx, id)
	if err != nil {
		return err
	}
	defer unlock()
	ctx = r.ns(ctx)
	c, err := r.client.LoadContainer(ctx, id)
	if isNotFound(err) {
		// Gone already; sweep what a half-done create or remove may leave.
		r.dropWaiter(id, false)
		r.dropOrphanSnapshot(ctx, id)
		if p := r.cgroupParent() + "/" + id; cgroupExists(p) {
			if err := RemoveCgroup(p); err != nil {
				r.cfg.logf("containerd: %v", err)
			}
		}
		if err := r.removeFIFOs(id); err != nil {
			r.cfg.logf("containerd: container %s: %v", id, err)
		}
		return nil
	} else if err != nil {
		return wrapErr(err, "removing container %s", id)
	}
	rec, _ := c.Info(ctx, ctd.WithoutRefreshedMetadata)
	if err := r.deleteTask(ctx, c, rec); err != nil {
		return fmt.Errorf("removing container %s: %w", id, err)
	}
	r.dropWaiter(id, false)
	if rec.SnapshotKey != "" {
		err := r.client.SnapshotService(rec.Snapshotter).Remove(ctx, rec.SnapshotKey)
		if err != nil && !isNotFound(err) {
			return wrapErr(err, "removing container %s: snapshot", id)
		}
	}
	if err := r.client.ContainerService().Delete(ctx, id); err != nil && !isNotFound(err) {
		return wrapErr(err, "removing container %s", id)
	}
	if err := r.removeFIFOs(id); err != nil {
		r.cfg.logf("containerd: container %s: %v", id, err)
	}
	return nil
}

// deleteTask kills the container's task if it still runs, lets its waiter
// report the exit, deletes the task and its cgroup. No task is success.
func (r *Runtime) deleteTask(ctx context.Context, c ctd.Container, rec containers.Container) error {
	proc, err := r.process(ctx, c.ID())
	if err != nil {
		return wrapErr(err, "loading task")
	}
	if proc == nil {
		return nil
	}
	if proc.Status != apitask.Status_STOPPED {
		if err := r.killAndWait(ctx, c); err != nil {
			return err
		}
	}
	if err := r.awaitWaiter(ctx, c.ID()); err != nil {
		return err
	}
	_, err = r.client.TaskService().Delete(ctx, &tasks.DeleteTaskRequest{ContainerID: c.ID()})
	if err != nil && !isNotFound(err) {
		return wrapErr(err, "deleting task")
	}
	r.removeCgroup(rec)
	return nil
}

// removeCgroup deletes the empty cgroup directories runc leaves behind.
func (r *Runtime) removeCgroup(rec containers.Container) {
	if p := cgroupPathOf(rec); p != "" {
		if err := RemoveCgroup(p); err != nil {
			r.cfg.logf("containerd: %v", err)
		}
	}
}

// process returns the main process of id's task, nil if it has none.
func (r *Runtime) process(ctx context.Context, id string) (*apitask.Process, error) {
	resp, err := r.client.TaskService().Get(ctx, &tasks.GetRequest{ContainerID: id})
	if isNotFound(err) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	return resp.Process, nil
}

func alive(p *apitask.Process) bool {
	switch p.Status {
	case apitask.Status_RUNNING, apitask.Status_PAUSED, apitask.Status_PAUSING:
		return true
	}
	return false
}

// cleanupContext outlives a cancelled ctx for a bounded cleanup.
func cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
}
