package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/types"

	"github.com/shoal-dev/shoal/node/container"
	"github.com/shoal-dev/shoal/node/podnet"
	"github.com/shoal-dev/shoal/node/state"
)

var podKind, _ = state.KindFor("pods")

// ctrState is what the worker knows of one container of the pod.
type ctrState struct {
	// runs are the container's runs still in the runtime, oldest first: at
	// most the current one and the one before (for logs --previous and
	// lastState).
	runs []container.ContainerStatus
	// waitReason and waitMsg say why the container cannot start (a pull or
	// config error, back-off); cleared when it starts.
	waitReason, waitMsg string
	// retryAt is when the next start may be tried (back-off).
	retryAt time.Time
	delay   time.Duration // the current back-off step; 0 = none yet
	// killReason is set when the agent stops the current run itself (a
	// failed liveness or startup probe) so it is restarted.
	killReason string
	// killed remembers why the agent stopped a run (by container ID), for
	// its termination message.
	killed map[string]string
	probes *prober // probes of the current run, nil if none
}

func (cs *ctrState) current() *container.ContainerStatus {
	if len(cs.runs) == 0 {
		return nil
	}
	return &cs.runs[len(cs.runs)-1]
}

func (cs *ctrState) previous() *container.ContainerStatus {
	if len(cs.runs) < 2 {
		return nil
	}
	return &cs.runs[len(cs.runs)-2]
}

func attemptOf(c container.ContainerStatus) int {
	n, _ := strconv.Atoi(c.Labels[labelAttempt])
	return n
}

// podWorker runs one pod. Its run goroutine owns everything except the
// fields guarded by mu, which other goroutines use to hand it news.
type podWorker struct {
	a   *Agent
	uid types.UID

	mu  sync.Mutex
	pod *corev1.Pod // latest version from the replica (shared: never mutate)
	// published are the container runs as of the last sync, by container
	// name, for the stream handlers (logs, exec).
	published map[string][]container.ContainerStatus
	gone      bool // the pod was removed from the replica
	cancel    context.CancelFunc
	podCtx    context.Context

	kick chan struct{}

	// owned by run
	ctrs      map[string]*ctrState
	net       *podnet.PodNet
	files     podFiles
	mounts    map[string]string
	roVolumes map[string]bool
	volErr    error
	sourceRVs map[string]string // configMap/secret volume → source resourceVersion written
	sandbox   error             // why the pod's network could not be set up
	retrySB   time.Time
	startTime time.Time
}

func newPodWorker(a *Agent, p *corev1.Pod, adopted []container.ContainerStatus) *podWorker {
	ctx, cancel := context.WithCancel(context.Background())
	pw := &podWorker{
		a: a, uid: p.UID, pod: p, podCtx: ctx, cancel: cancel,
		kick: make(chan struct{}, 1),
		ctrs: map[string]*ctrState{},
	}
	sort.Slice(adopted, func(i, j int) bool { return attemptOf(adopted[i]) < attemptOf(adopted[j]) })
	for _, c := range adopted {
		name := c.Labels[labelContainer]
		cs := pw.ctrs[name]
		if cs == nil {
			cs = &ctrState{}
			pw.ctrs[name] = cs
		}
		cs.runs = append(cs.runs, c)
	}
	if p.Status.StartTime != nil {
		pw.startTime = p.Status.StartTime.Time
	}
	pw.poke()
	return pw
}

func (pw *podWorker) adoptedIDs() []string {
	var ids []string
	for _, cs := range pw.ctrs {
		for _, r := range cs.runs {
			ids = append(ids, r.ID)
		}
	}
	return ids
}

func (pw *podWorker) poke() {
	select {
	case pw.kick <- struct{}{}:
	default:
	}
}

func (pw *podWorker) update(p *corev1.Pod) {
	pw.mu.Lock()
	pw.pod = p
	if p.DeletionTimestamp != nil {
		pw.cancel()
	}
	pw.mu.Unlock()
	pw.poke()
}

func (pw *podWorker) deleted() {
	pw.mu.Lock()
	pw.gone = true
	pw.cancel()
	pw.mu.Unlock()
	pw.poke()
}

func (pw *podWorker) containerExited(container.Exit) { pw.poke() }

func (pw *podWorker) snapshot() (*corev1.Pod, bool) {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	return pw.pod, pw.gone
}

// run syncs the pod whenever something changes and at least every Resync,
// until the pod is gone and cleaned up or ctx ends (the agent stops: its
// containers keep running).
func (pw *podWorker) run(ctx context.Context) {
	defer pw.cancel()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			pw.stopProbes()
			return
		case <-pw.kick:
		case <-timer.C:
		}
		next, done := pw.sync(ctx)
		if done {
			return
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(next)
	}
}

// sync does one step towards the pod's desired state and reports its
// status. It returns when to sync again at the latest, and whether the
// worker is done (the pod is gone and everything of it removed).
func (pw *podWorker) sync(ctx context.Context) (time.Duration, bool) {
	a := pw.a
	pod, gone := pw.snapshot()
	now := a.cfg.Now()
	next := a.cfg.Resync

	pw.refreshRuns(ctx)
	if gone || pod.DeletionTimestamp != nil {
		grace := 2 * time.Second // force-deleted: stop promptly
		if !gone {
			grace = gracePeriod(pod)
		}
		if err := pw.terminate(ctx, pod, grace); err != nil {
			a.log.Warn("agent: cleaning up pod", "pod", pod.Namespace+"/"+pod.Name, "err", err)
			return time.Second, false
		}
		if !gone && len(pod.Finalizers) == 0 {
			_, err := a.cfg.Proposer.Propose(ctx, state.Delete(podKind, pod.Namespace, pod.Name, 0, string(pod.UID)))
			if err != nil && !state.IsCode(err, state.CodeNotFound) && !state.IsCode(err, state.CodeConflict) {
				if ctx.Err() == nil {
					a.log.Warn("agent: deleting terminated pod", "pod", pod.Namespace+"/"+pod.Name, "err", err)
				}
				return time.Second, false
			}
		}
		return 0, true
	}
	if pw.startTime.IsZero() {
		pw.startTime = now
	}

	terminal := pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
	if !terminal {
		if d, ok := pw.ensureSandbox(ctx, pod, now); !ok {
			next = min(next, d)
		} else if d := pw.syncContainers(ctx, pod, now); d > 0 {
			next = min(next, d)
		}
	} else {
		pw.stopAll(ctx, pod, gracePeriod(pod))
	}
	st := pw.computeStatus(pod, now)
	if st.Phase == corev1.PodSucceeded || st.Phase == corev1.PodFailed {
		pw.stopAll(ctx, pod, gracePeriod(pod))
	}
	pw.publish()
	if err := pw.writeStatus(ctx, pod, st); err != nil {
		if ctx.Err() == nil && !state.IsCode(err, state.CodeNotFound) {
			a.log.Debug("agent: writing pod status", "pod", pod.Namespace+"/"+pod.Name, "err", err)
		}
		next = min(next, 200*time.Millisecond)
	}
	return next, false
}

// gracePeriod is how long the pod's containers get between SIGTERM and
// SIGKILL.
func gracePeriod(pod *corev1.Pod) time.Duration {
	if g := pod.DeletionGracePeriodSeconds; g != nil {
		return time.Duration(*g) * time.Second
	}
	if g := pod.Spec.TerminationGracePeriodSeconds; g != nil {
		return time.Duration(*g) * time.Second
	}
	return 30 * time.Second
}

// refreshRuns re-reads the state of current runs that may have changed.
func (pw *podWorker) refreshRuns(ctx context.Context) {
	for _, cs := range pw.ctrs {
		cur := cs.current()
		if cur == nil || cur.State == container.StateExited {
			continue
		}
		st, err := pw.a.cfg.Runtime.Status(ctx, cur.ID)
		if err != nil {
			if errors.Is(err, container.ErrNotFound) {
				cs.runs = cs.runs[:len(cs.runs)-1]
			}
			continue
		}
		*cur = st
		if st.State == container.StateExited && cs.probes != nil {
			cs.probes.stop()
			cs.probes = nil
		}
	}
}

// ensureSandbox gives the pod its network and files. It reports false (and
// when to retry) when they are not ready.
func (pw *podWorker) ensureSandbox(ctx context.Context, pod *corev1.Pod, now time.Time) (time.Duration, bool) {
	a := pw.a
	if pw.net != nil && pw.mounts != nil {
		a.refreshSourceVolumes(a.podDir(pod.UID), pod, pw.sourceRVs)
		return 0, true
	}
	if now.Before(pw.retrySB) {
		return pw.retrySB.Sub(now), false
	}
	dir := a.podDir(pod.UID)
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o700); err != nil {
		pw.sandbox = err
		pw.retrySB = now.Add(time.Second)
		return time.Second, false
	}
	if pw.net == nil {
		if pod.Spec.HostNetwork {
			pw.net = &podnet.PodNet{IP: parseIP(a.cfg.HostIP), NetNSPath: fmt.Sprintf("/proc/%d/ns/net", os.Getpid())}
		} else {
			pn, err := a.cfg.Network.Setup(pw.podCtx, string(pod.UID), "")
			if err != nil {
				pw.sandbox = err
				pw.retrySB = now.Add(2 * time.Second)
				a.log.Warn("agent: pod network", "pod", pod.Namespace+"/"+pod.Name, "err", err)
				return 2 * time.Second, false
			}
			pw.net = &pn
		}
		pw.sandbox = nil
	}
	ip := ""
	if pw.net.IP != nil {
		ip = pw.net.IP.String()
	}
	files, err := a.writePodFiles(dir, pod, ip)
	if err != nil {
		pw.sandbox = err
		pw.retrySB = now.Add(2 * time.Second)
		return 2 * time.Second, false
	}
	pw.files = files
	mounts, ro, err := a.prepareVolumes(dir, pod)
	if err != nil {
		pw.volErr = err
		pw.retrySB = now.Add(5 * time.Second)
		return 5 * time.Second, false
	}
	pw.volErr = nil
	pw.mounts, pw.roVolumes = mounts, ro
	pw.sourceRVs = map[string]string{}
	a.refreshSourceVolumes(dir, pod, pw.sourceRVs) // records what was written
	return 0, true
}

func (pw *podWorker) ctr(name string) *ctrState {
	cs := pw.ctrs[name]
	if cs == nil {
		cs = &ctrState{}
		pw.ctrs[name] = cs
	}
	return cs
}

// syncContainers starts init containers in order, then the app containers,
// and restarts what exited as the restart policy says. It returns when it
// wants to run again (0: only when something happens).
func (pw *podWorker) syncContainers(ctx context.Context, pod *corev1.Pod, now time.Time) time.Duration {
	var next time.Duration
	wake := func(d time.Duration) {
		if d > 0 && (next == 0 || d < next) {
			next = d
		}
	}
	// Probe verdicts first: a failed liveness probe stops the run.
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		cs := pw.ctr(c.Name)
		if cs.probes != nil {
			if reason := cs.probes.killVerdict(); reason != "" && cs.killReason == "" {
				cs.killReason = reason
				pw.a.event(pod, c.Name, false, corev1.EventTypeNormal, "Killing", "%s", reason)
				cur := cs.current()
				if cs.killed == nil {
					cs.killed = map[string]string{}
				}
				cs.killed[cur.ID] = reason
				pw.a.log.Info("agent: restarting container", "pod", pod.Namespace+"/"+pod.Name, "container", c.Name, "reason", reason)
				if err := pw.a.cfg.Runtime.StopContainer(ctx, cur.ID, gracePeriod(pod)); err == nil {
					if st, err := pw.a.cfg.Runtime.Status(ctx, cur.ID); err == nil {
						*cur = st
					}
				}
				cs.probes.stop()
				cs.probes = nil
			}
		}
	}

	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		cs := pw.ctr(c.Name)
		sidecar := c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
		cur := cs.current()
		switch {
		case cur == nil:
			wake(pw.startContainer(ctx, pod, c, cs, true, now))
			return next
		case cur.State == container.StateRunning, cur.State == container.StateCreated:
			if sidecar {
				continue
			}
			return next // wait for it to finish
		case cur.ExitCode == 0 && !sidecar:
			continue
		default:
			if !sidecar && pod.Spec.RestartPolicy == corev1.RestartPolicyNever {
				return next // the pod has failed
			}
			wake(pw.restart(ctx, pod, c, cs, true, now))
			return next
		}
	}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		cs := pw.ctr(c.Name)
		cur := cs.current()
		switch {
		case cur == nil:
			wake(pw.startContainer(ctx, pod, c, cs, false, now))
		case cur.State == container.StateExited:
			if shouldRestart(pod.Spec.RestartPolicy, cur.ExitCode) {
				wake(pw.restart(ctx, pod, c, cs, false, now))
			}
		case cur.State == container.StateCreated:
			// Created but never started (the agent died in between).
			if err := pw.a.cfg.Runtime.StartContainer(ctx, cur.ID); err == nil {
				if st, err := pw.a.cfg.Runtime.Status(ctx, cur.ID); err == nil {
					*cur = st
				}
			}
		case cur.State == container.StateRunning && cs.probes == nil && hasProbes(c):
			pw.startProbes(pod, c, cs, cur.ID) // adopted after an agent restart
		}
	}
	return next
}

func hasProbes(c *corev1.Container) bool {
	return c.LivenessProbe != nil || c.ReadinessProbe != nil || c.StartupProbe != nil
}

func shouldRestart(policy corev1.RestartPolicy, exitCode int) bool {
	switch policy {
	case corev1.RestartPolicyNever:
		return false
	case corev1.RestartPolicyOnFailure:
		return exitCode != 0
	}
	return true
}

// restart starts a new run of an exited container once its back-off has
// passed: the first restart is immediate, then 10 s, 20 s, … up to 5 min;
// a run that lasted 10 minutes resets the back-off.
func (pw *podWorker) restart(ctx context.Context, pod *corev1.Pod, c *corev1.Container, cs *ctrState, isInit bool, now time.Time) time.Duration {
	cur := cs.current()
	if cs.killReason == "" && !cur.StartedAt.IsZero() && cur.FinishedAt.Sub(cur.StartedAt) >= 10*time.Minute {
		cs.delay = 0
	}
	if cs.retryAt.IsZero() || cs.retryAt.Before(cur.FinishedAt) {
		// First time this exit is looked at: schedule the restart.
		if cs.delay == 0 {
			cs.retryAt = cur.FinishedAt
			cs.delay = pw.a.cfg.BackoffBase
		} else {
			cs.retryAt = cur.FinishedAt.Add(cs.delay)
			cs.delay = min(2*cs.delay, pw.a.cfg.BackoffMax)
		}
	}
	if now.Before(cs.retryAt) {
		if cs.waitReason != "CrashLoopBackOff" {
			pw.a.event(pod, c.Name, isInit, corev1.EventTypeWarning, "BackOff", "Back-off restarting failed container %s in pod %s_%s(%s)", c.Name, pod.Name, pod.Namespace, pod.UID)
		}
		cs.waitReason = "CrashLoopBackOff"
		cs.waitMsg = fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)",
			cs.retryAt.Sub(cur.FinishedAt).Round(time.Second), c.Name, pod.Name, pod.Namespace, pod.UID)
		return cs.retryAt.Sub(now)
	}
	cs.killReason = ""
	return pw.startContainer(ctx, pod, c, cs, isInit, now)
}

// startContainer makes and starts the next run of container c. It returns
// when to retry if it could not.
func (pw *podWorker) startContainer(ctx context.Context, pod *corev1.Pod, c *corev1.Container, cs *ctrState, isInit bool, now time.Time) time.Duration {
	a := pw.a
	if !cs.retryAt.IsZero() && now.Before(cs.retryAt) && cs.current() == nil {
		return cs.retryAt.Sub(now) // image pull or config back-off
	}
	img, err := pw.ensureImage(pw.podCtx, pod, c, isInit)
	if err != nil {
		var ce *configError
		switch {
		case errors.As(err, &ce):
			cs.waitReason, cs.waitMsg = ce.reason(), ce.msg
		default:
			cs.waitReason, cs.waitMsg = "ErrImagePull", err.Error()
			if cs.delay > 0 {
				a.event(pod, c.Name, isInit, corev1.EventTypeWarning, "BackOff", "Back-off pulling image %q", c.Image)
			}
		}
		a.event(pod, c.Name, isInit, corev1.EventTypeWarning, "Failed", "Error: %s", cs.waitMsg)
		return pw.backoff(cs, now)
	}
	attempt := 0
	if cur := cs.current(); cur != nil {
		attempt = attemptOf(*cur) + 1
	}
	dir := a.podDir(pod.UID)
	sc := &specContext{
		store: a.cfg.Store, pod: pod, hostIP: a.cfg.HostIP,
		netnsPath: pw.net.NetNSPath, image: img.Config,
		mounts: pw.mounts, readOnly: pw.roVolumes, podFiles: pw.files,
		attempt: attempt, isInit: isInit, allocatable: a.allocatable(),
		logPath: filepath.Join(dir, "logs", c.Name, strconv.Itoa(attempt)+".log"),
	}
	if pw.net.IP != nil {
		sc.podIP = pw.net.IP.String()
	}
	if c.TerminationMessagePath != "" {
		sc.termPath = filepath.Join(dir, "termination", c.Name+"-"+strconv.Itoa(attempt))
		if err := os.MkdirAll(filepath.Dir(sc.termPath), 0o755); err == nil {
			if f, err := os.OpenFile(sc.termPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o666); err == nil {
				f.Close()
				_ = os.Chmod(sc.termPath, 0o666)
			}
		}
	}
	spec, err := buildSpec(sc, c)
	if err != nil {
		cs.waitReason, cs.waitMsg = "CreateContainerConfigError", err.Error()
		a.event(pod, c.Name, isInit, corev1.EventTypeWarning, "Failed", "Error: %s", cs.waitMsg)
		return pw.backoff(cs, now)
	}
	if err := a.cfg.Runtime.CreateContainer(ctx, spec); err != nil {
		if errors.Is(err, container.ErrAlreadyExists) {
			_ = a.cfg.Runtime.RemoveContainer(ctx, spec.ID)
			err = a.cfg.Runtime.CreateContainer(ctx, spec)
		}
		if err != nil {
			cs.waitReason, cs.waitMsg = "CreateContainerError", err.Error()
			if errors.Is(err, container.ErrInvalid) {
				cs.waitReason = "CreateContainerConfigError"
			}
			a.event(pod, c.Name, isInit, corev1.EventTypeWarning, "Failed", "Error: %s", cs.waitMsg)
			return pw.backoff(cs, now)
		}
	}
	a.trackContainer(spec.ID, pod.UID)
	a.event(pod, c.Name, isInit, corev1.EventTypeNormal, "Created", "Created container %s", c.Name)
	if err := a.cfg.Runtime.StartContainer(ctx, spec.ID); err != nil {
		cs.waitReason, cs.waitMsg = "RunContainerError", err.Error()
		a.event(pod, c.Name, isInit, corev1.EventTypeWarning, "Failed", "Error: %s", cs.waitMsg)
		_ = a.cfg.Runtime.RemoveContainer(ctx, spec.ID)
		a.untrackContainer(spec.ID)
		return pw.backoff(cs, now)
	}
	st, err := a.cfg.Runtime.Status(ctx, spec.ID)
	if err != nil {
		st = container.ContainerStatus{ID: spec.ID, State: container.StateRunning, StartedAt: now, Labels: spec.Labels, Image: spec.Image}
	}
	cs.waitReason, cs.waitMsg = "", ""
	a.event(pod, c.Name, isInit, corev1.EventTypeNormal, "Started", "Started container %s", c.Name)
	cs.runs = append(cs.runs, st)
	// Keep the current run and the one before; remove older ones.
	for len(cs.runs) > 2 {
		old := cs.runs[0]
		if err := a.cfg.Runtime.RemoveContainer(ctx, old.ID); err != nil {
			a.log.Warn("agent: removing old container", "id", old.ID, "err", err)
			break
		}
		a.untrackContainer(old.ID)
		delete(cs.killed, old.ID)
		_ = os.Remove(old.LogPath)
		cs.runs = cs.runs[1:]
	}
	if cs.probes != nil {
		cs.probes.stop()
		cs.probes = nil
	}
	if hasProbes(c) && !isInit {
		pw.startProbes(pod, c, cs, spec.ID)
	}
	return 0
}

// backoff schedules the next try of a container that could not start.
func (pw *podWorker) backoff(cs *ctrState, now time.Time) time.Duration {
	if cs.delay == 0 {
		cs.delay = pw.a.cfg.BackoffBase
	} else {
		cs.delay = min(2*cs.delay, pw.a.cfg.BackoffMax)
	}
	cs.retryAt = now.Add(cs.delay)
	return cs.delay
}

func (e *configError) reason() string {
	switch {
	case e.pullNever:
		return "ErrImageNeverPull"
	case e.badImage:
		return "InvalidImageName"
	}
	return "CreateContainerConfigError"
}

// ensureImage makes sure the container's image is on the node, pulling it
// from peers (or its registry) as imagePullPolicy says.
func (pw *podWorker) ensureImage(ctx context.Context, pod *corev1.Pod, c *corev1.Container, isInit bool) (container.Image, error) {
	a := pw.a
	ref, err := container.NormalizeRef(c.Image)
	if err != nil {
		return container.Image{}, &configError{badImage: true, msg: fmt.Sprintf("Failed to apply default image tag %q: %v", c.Image, trimInvalid(err))}
	}
	img, err := a.cfg.Runtime.GetImage(ctx, ref)
	if err == nil && c.ImagePullPolicy != corev1.PullAlways {
		return img, nil
	}
	if err != nil && !errors.Is(err, container.ErrNotFound) {
		return container.Image{}, err
	}
	if c.ImagePullPolicy == corev1.PullNever {
		if err != nil {
			return container.Image{}, &configError{pullNever: true, msg: fmt.Sprintf("Container image %q is not present with pull policy of Never", c.Image)}
		}
		return img, nil
	}
	opts := container.PullOptions{Registry: a.cfg.PullFromRegistries, Refresh: c.ImagePullPolicy == corev1.PullAlways,
		Credentials: a.pullCredentials(pod)}
	if a.cfg.Mirrors != nil {
		opts.Mirrors = a.cfg.Mirrors(ref)
	}
	if err != nil {
		a.event(pod, c.Name, isInit, corev1.EventTypeNormal, "Pulling", "Pulling image %q", c.Image)
	}
	start := a.cfg.Now()
	pulled, perr := a.cfg.Runtime.PullImage(ctx, ref, opts)
	if perr == nil && (err != nil || pulled.Digest != img.Digest) { // new, or refreshed (Always)
		a.event(pod, c.Name, isInit, corev1.EventTypeNormal, "Pulled", "Successfully pulled image %q in %s", c.Image, a.cfg.Now().Sub(start).Round(time.Millisecond))
	}
	if perr != nil {
		if err == nil {
			// PullAlways with the image here and nowhere to pull from: an
			// edge node runs what it has.
			return img, nil
		}
		return container.Image{}, fmt.Errorf("failed to pull image %q: %w", c.Image, perr)
	}
	return pulled, nil
}

// stopAll stops every running container of the pod.
func (pw *podWorker) stopAll(ctx context.Context, pod *corev1.Pod, grace time.Duration) {
	var wg sync.WaitGroup
	for name, cs := range pw.ctrs {
		cur := cs.current()
		if cur == nil || cur.State == container.StateExited {
			continue
		}
		if cs.probes != nil {
			cs.probes.stop()
			cs.probes = nil
		}
		wg.Add(1)
		pw.a.event(pod, name, false, corev1.EventTypeNormal, "Killing", "Stopping container %s", name)
		go func() {
			defer wg.Done()
			pw.runPreStop(ctx, pod, name, cur.ID, grace)
			if err := pw.a.cfg.Runtime.StopContainer(ctx, cur.ID, grace); err != nil {
				pw.a.log.Warn("agent: stopping container", "id", cur.ID, "err", err)
			}
		}()
	}
	wg.Wait()
	pw.refreshRuns(ctx)
}

// terminate stops the pod's containers with the grace period and removes
// them, their network and the pod's files.
func (pw *podWorker) terminate(ctx context.Context, pod *corev1.Pod, grace time.Duration) error {
	a := pw.a
	pw.stopAll(ctx, pod, grace)
	var errs []error
	for _, cs := range pw.ctrs {
		for _, r := range cs.runs {
			if err := a.cfg.Runtime.RemoveContainer(ctx, r.ID); err != nil {
				errs = append(errs, err)
				continue
			}
			a.untrackContainer(r.ID)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	pw.ctrs = map[string]*ctrState{}
	if err := a.removeCgroup(pod.UID); err != nil {
		return err
	}
	if !pod.Spec.HostNetwork {
		if err := a.cfg.Network.Teardown(ctx, string(pod.UID)); err != nil {
			return err
		}
	}
	pw.net = nil
	return removePodDir(a.podDir(pod.UID))
}

func (pw *podWorker) stopProbes() {
	for _, cs := range pw.ctrs {
		if cs.probes != nil {
			cs.probes.stop()
			cs.probes = nil
		}
	}
}

// writeStatus commits st as the pod's status unless it is already stored.
func (pw *podWorker) writeStatus(ctx context.Context, pod *corev1.Pod, st corev1.PodStatus) error {
	a := pw.a
	o, ok := a.cfg.Store.Get("pods", pod.Namespace, pod.Name)
	if !ok {
		return nil
	}
	cur := o.(*corev1.Pod)
	if cur.UID != pod.UID || cur.DeletionTimestamp != nil {
		return nil
	}
	keepTransitionTimes(&st, &cur.Status)
	if equality.Semantic.DeepEqual(cur.Status, st) {
		return nil
	}
	upd := cur.DeepCopy()
	upd.Status = st
	_, err := a.cfg.Proposer.Propose(ctx, state.Update(upd, rvOf(cur)))
	return err
}

func rvOf(o state.Object) uint64 {
	v, _ := strconv.ParseUint(o.GetResourceVersion(), 10, 64)
	return v
}

// publish copies the runs for the stream handlers.
func (pw *podWorker) publish() {
	pub := make(map[string][]container.ContainerStatus, len(pw.ctrs))
	for name, cs := range pw.ctrs {
		pub[name] = append([]container.ContainerStatus(nil), cs.runs...)
	}
	pw.mu.Lock()
	pw.published = pub
	pw.mu.Unlock()
}

// runs returns the published runs of a container, oldest first.
func (pw *podWorker) runs(name string) []container.ContainerStatus {
	pw.mu.Lock()
	defer pw.mu.Unlock()
	return pw.published[name]
}
