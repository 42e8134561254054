package containerd

import (
	"context"
	"strconv"
	"sync/atomic"
	"time"

	tasks "github.com/containerd/containerd/api/services/tasks/v1"

	"github.com/shoal-dev/shoal/node/container"
)

// waiter follows one run of a container's main process and reports its
// exit: labels first, then Exits.
type waiter struct {
	done    chan struct{} // closed when the waiter has finished
	cancel  context.CancelFunc
	discard atomic.Bool // set when the run never started: report nothing
}

// startWaiter follows the current task of id, replacing any finished
// waiter. Callers hold the container's lock.
func (r *Runtime) startWaiter(id string) *waiter {
	ctx, cancel := context.WithCancel(r.life)
	w := &waiter{done: make(chan struct{}), cancel: cancel}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		cancel()
		close(w.done)
		return w
	}
	r.waiters[id] = w
	r.wg.Add(1)
	r.mu.Unlock()
	go func() {
		defer r.wg.Done()
		defer close(w.done)
		defer cancel()
		r.follow(r.ns(ctx), id, w)
	}()
	return w
}

// follow blocks in the tasks Wait call until the process exits, retrying
// while the daemon is unreachable (a restart), and gives up when the task
// is gone or the runtime closes.
func (r *Runtime) follow(ctx context.Context, id string, w *waiter) {
	backoff := 50 * time.Millisecond
	logged := false
	for {
		resp, err := r.client.TaskService().Wait(ctx, &tasks.WaitRequest{ContainerID: id})
		if err == nil {
			if w.discard.Load() {
				return
			}
			exit := container.Exit{ID: id, ExitCode: int(resp.ExitStatus), At: resp.ExitedAt.AsTime()}
			exit.OOMKilled = r.exitWasOOM(ctx, id)
			r.recordExit(ctx, id, exit)
			r.exits.Push(exit)
			return
		}
		if ctx.Err() != nil || isNotFound(err) {
			return
		}
		if !logged {
			r.cfg.logf("containerd: waiting for container %s: %v (retrying until the daemon answers)", id, err)
			logged = true
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// exitWasOOM reads the container's memory cgroup, which still exists until
// its task is deleted.
func (r *Runtime) exitWasOOM(ctx context.Context, id string) bool {
	rec, err := r.client.ContainerService().Get(ctx, id)
	if err != nil {
		return false
	}
	return oomKills(cgroupPathOf(rec)) > 0
}

// recordExit stores the exit in the container's labels, so Status knows it
// even if the task is lost; a container removed meanwhile is fine.
func (r *Runtime) recordExit(ctx context.Context, id string, e container.Exit) {
	c, err := r.client.LoadContainer(ctx, id)
	if err == nil {
		_, err = c.SetLabels(ctx, exitLabels(e))
	}
	if err != nil && !isNotFound(err) {
		r.cfg.logf("containerd: recording exit %d of %s: %v", e.ExitCode, id, err)
	}
}

// awaitWaiter waits until the current waiter of id (if any) has finished,
// so its exit is reported before the task goes. Callers hold the lock.
func (r *Runtime) awaitWaiter(ctx context.Context, id string) error {
	r.mu.Lock()
	w := r.waiters[id]
	r.mu.Unlock()
	if w == nil {
		return nil
	}
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// dropWaiter forgets id's waiter, stopping it if it still runs.
func (r *Runtime) dropWaiter(id string, discard bool) {
	r.mu.Lock()
	w := r.waiters[id]
	delete(r.waiters, id)
	r.mu.Unlock()
	if w != nil {
		if discard {
			w.discard.Store(true)
		}
		w.cancel()
		<-w.done
	}
}

func exitCodeLabel(labels map[string]string) (int, bool) {
	v, ok := labels[labelExitCode]
	if !ok || v == "" {
		return 0, false
	}
	n, err := strconv.Atoi(v)
	return n, err == nil
}
