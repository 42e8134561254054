package containerd

import (
	"context"
	"sort"

	tasks "github.com/containerd/containerd/api/services/tasks/v1"
	apitask "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/containers"

	"github.com/shoal-dev/shoal/node/container"
)

// Status implements container.Runtime.
func (r *Runtime) Status(ctx context.Context, id string) (container.ContainerStatus, error) {
	if err := container.CheckID(id); err != nil {
		return container.ContainerStatus{}, err
	}
	ctx = r.ns(ctx)
	rec, err := r.client.ContainerService().Get(ctx, id)
	if err != nil {
		return container.ContainerStatus{}, wrapErr(err, "container %s", id)
	}
	proc, err := r.process(ctx, id)
	if err != nil {
		return container.ContainerStatus{}, wrapErr(err, "container %s: task", id)
	}
	return statusOf(rec, proc), nil
}

// List implements container.Runtime.
func (r *Runtime) List(ctx context.Context) ([]container.ContainerStatus, error) {
	ctx = r.ns(ctx)
	recs, err := r.client.ContainerService().List(ctx)
	if err != nil {
		return nil, wrapErr(err, "listing containers")
	}
	resp, err := r.client.TaskService().List(ctx, &tasks.ListTasksRequest{})
	if err != nil {
		return nil, wrapErr(err, "listing tasks")
	}
	procs := make(map[string]*apitask.Process, len(resp.Tasks))
	for _, p := range resp.Tasks {
		procs[p.ID] = p
	}
	out := make([]container.ContainerStatus, 0, len(recs))
	for _, rec := range recs {
		out = append(out, statusOf(rec, procs[rec.ID]))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// statusOf combines the container record and its task (nil when none).
func statusOf(rec containers.Container, proc *apitask.Process) container.ContainerStatus {
	st := container.ContainerStatus{
		ID:          rec.ID,
		CreatedAt:   rec.CreatedAt,
		Image:       rec.Image,
		ImageDigest: rec.Labels[labelImageID],
		LogPath:     rec.Labels[labelLogPath],
		Labels:      userLabels(rec.Labels),
		StartedAt:   parseTime(rec.Labels[labelStartedAt]),
		State:       container.StateCreated,
	}
	recordedExit := func() {
		st.State = container.StateExited
		st.ExitCode = 255 // containerd's code for an exit nobody saw
		if code, ok := exitCodeLabel(rec.Labels); ok {
			st.ExitCode = code
		}
		st.FinishedAt = parseTime(rec.Labels[labelFinishedAt])
		st.OOMKilled = rec.Labels[labelOOMKilled] == "true"
	}
	if proc == nil {
		if !st.StartedAt.IsZero() {
			recordedExit()
		}
		return st
	}
	switch proc.Status {
	case apitask.Status_RUNNING, apitask.Status_PAUSED, apitask.Status_PAUSING:
		st.State, st.Pid = container.StateRunning, int(proc.Pid)
	case apitask.Status_CREATED:
		st.State = container.StateCreated
	case apitask.Status_STOPPED:
		st.State = container.StateExited
		st.ExitCode = int(proc.ExitStatus)
		st.FinishedAt = proc.ExitedAt.AsTime()
		switch rec.Labels[labelOOMKilled] {
		case "true":
			st.OOMKilled = true
		case "false":
		default: // the waiter has not recorded it yet
			st.OOMKilled = oomKills(cgroupPathOf(rec)) > 0
		}
	default:
		st.State = container.StateUnknown
	}
	return st
}
