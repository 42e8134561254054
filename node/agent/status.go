package agent

import (
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/node/container"
)

func parseIP(s string) net.IP { return net.ParseIP(s) }

func mtime(t time.Time) metav1.Time { return metav1.NewTime(t.Truncate(time.Second)) }

// computeStatus builds the pod's status from what the worker knows, the way
// the kubelet does.
func (pw *podWorker) computeStatus(pod *corev1.Pod, now time.Time) corev1.PodStatus {
	a := pw.a
	st := corev1.PodStatus{
		QOSClass: qosClass(pod),
	}
	if a.cfg.HostIP != "" {
		st.HostIP = a.cfg.HostIP
		st.HostIPs = []corev1.HostIP{{IP: a.cfg.HostIP}}
	}
	if pw.net != nil && pw.net.IP != nil {
		st.PodIP = pw.net.IP.String()
		st.PodIPs = []corev1.PodIP{{IP: st.PodIP}}
	}
	if !pw.startTime.IsZero() {
		t := mtime(pw.startTime)
		st.StartTime = &t
	}

	initDone, initFailed := true, false
	var initPending []string
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		cst := pw.containerStatus(pod, c, true)
		st.InitContainerStatuses = append(st.InitContainerStatuses, cst)
		sidecar := c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
		switch {
		case sidecar && cst.State.Running != nil:
		case cst.State.Terminated != nil && cst.State.Terminated.ExitCode == 0 && !sidecar:
		default:
			initDone = false
			initPending = append(initPending, c.Name)
			if t := cst.State.Terminated; t != nil && t.ExitCode != 0 && pod.Spec.RestartPolicy == corev1.RestartPolicyNever {
				initFailed = true
			}
		}
	}
	var notReady []string
	running, waiting, stopped, succeeded := 0, 0, 0, 0
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		cst := pw.containerStatus(pod, c, false)
		if !initDone && cst.State.Waiting != nil && cst.State.Waiting.Reason == "ContainerCreating" {
			cst.State.Waiting.Reason = "PodInitializing"
		}
		st.ContainerStatuses = append(st.ContainerStatuses, cst)
		if !cst.Ready {
			notReady = append(notReady, c.Name)
		}
		switch {
		case cst.State.Running != nil:
			running++
		case cst.State.Terminated != nil:
			stopped++
			if cst.State.Terminated.ExitCode == 0 {
				succeeded++
			}
		case cst.State.Waiting != nil:
			if cst.LastTerminationState.Terminated != nil {
				stopped++
			} else {
				waiting++
			}
		}
	}

	// Phase, as kubelet's getPhase.
	switch {
	case initFailed:
		st.Phase = corev1.PodFailed
	case !initDone:
		st.Phase = corev1.PodPending
	case waiting > 0:
		st.Phase = corev1.PodPending
	case running > 0:
		st.Phase = corev1.PodRunning
	case stopped > 0:
		switch {
		case pod.Spec.RestartPolicy == corev1.RestartPolicyAlways:
			st.Phase = corev1.PodRunning
		case stopped == succeeded:
			st.Phase = corev1.PodSucceeded
		case pod.Spec.RestartPolicy == corev1.RestartPolicyNever:
			st.Phase = corev1.PodFailed
		default:
			st.Phase = corev1.PodRunning
		}
	default:
		st.Phase = corev1.PodPending
	}
	if old := pod.Status.Phase; old == corev1.PodSucceeded || old == corev1.PodFailed {
		st.Phase = old // terminal phases are final
	}
	switch {
	case pw.sandbox != nil:
		st.Reason, st.Message = "", "pod network: "+pw.sandbox.Error()
	case pw.volErr != nil:
		st.Message = pw.volErr.Error()
	}

	terminal := st.Phase == corev1.PodSucceeded || st.Phase == corev1.PodFailed
	cond := func(t corev1.PodConditionType, ok bool, reason, msg string) corev1.PodCondition {
		c := corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: mtime(now)}
		if !ok {
			c.Status, c.Reason, c.Message = corev1.ConditionFalse, reason, msg
		}
		return c
	}
	sandboxReady := pw.net != nil && !terminal
	st.Conditions = []corev1.PodCondition{
		cond(corev1.PodReadyToStartContainers, sandboxReady, "", ""),
		cond(corev1.PodInitialized, initDone, "ContainersNotInitialized", fmt.Sprintf("containers with incomplete status: [%s]", strings.Join(initPending, " "))),
	}
	readyReason, readyMsg := "ContainersNotReady", fmt.Sprintf("containers with unready status: [%s]", strings.Join(notReady, " "))
	if terminal {
		readyReason, readyMsg = "PodCompleted", ""
		notReady = append(notReady, "")
	}
	st.Conditions = append(st.Conditions,
		cond(corev1.ContainersReady, len(notReady) == 0, readyReason, readyMsg),
		cond(corev1.PodReady, len(notReady) == 0, readyReason, readyMsg),
		cond(corev1.PodScheduled, true, "", ""),
	)
	if initDone && len(pod.Spec.InitContainers) == 0 {
		// Kubernetes writes Initialized=True with no message either way.
		st.Conditions[1].Reason, st.Conditions[1].Message = "", ""
	}
	return st
}

// containerStatus reports one container of the pod.
func (pw *podWorker) containerStatus(pod *corev1.Pod, c *corev1.Container, isInit bool) corev1.ContainerStatus {
	cs := pw.ctrs[c.Name]
	out := corev1.ContainerStatus{Name: c.Name, Image: c.Image}
	if cs == nil || cs.current() == nil {
		reason, msg := "ContainerCreating", ""
		if cs != nil && cs.waitReason != "" {
			reason, msg = cs.waitReason, cs.waitMsg
			if reason == "ErrImagePull" && cs.delay > pw.a.cfg.BackoffBase {
				reason, msg = "ImagePullBackOff", fmt.Sprintf("Back-off pulling image %q: %s", c.Image, cs.waitMsg)
			}
		}
		if pw.sandbox != nil || pw.volErr != nil {
			reason = "ContainerCreating"
			if pw.volErr != nil {
				reason, msg = "CreateContainerConfigError", pw.volErr.Error()
			}
		}
		out.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: msg}
		return out
	}
	cur := cs.current()
	out.RestartCount = int32(attemptOf(*cur))
	out.ContainerID = "containerd://" + cur.ID
	out.ImageID = imageID(cur)
	if cur.Image != "" {
		out.Image = cur.Image
	}
	if prev := cs.previous(); prev != nil && prev.State == container.StateExited {
		out.LastTerminationState.Terminated = pw.terminated(c, prev, cs)
	}
	switch cur.State {
	case container.StateRunning:
		out.State.Running = &corev1.ContainerStateRunning{StartedAt: mtime(cur.StartedAt)}
		started, ready := true, true
		if cs.probes != nil {
			started, ready = cs.probes.status()
		} else if hasProbes(c) && !isInit {
			started, ready = c.StartupProbe == nil, c.ReadinessProbe == nil && c.StartupProbe == nil
		}
		out.Started = &started
		out.Ready = ready && started
	case container.StateCreated:
		out.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
		f := false
		out.Started = &f
	case container.StateExited:
		t := pw.terminated(c, cur, cs)
		f := false
		out.Started = &f
		if !isInit && shouldRestart(pod.Spec.RestartPolicy, cur.ExitCode) || isInit && cur.ExitCode != 0 && pod.Spec.RestartPolicy != corev1.RestartPolicyNever {
			// Waiting to run again: the exit becomes lastState.
			out.LastTerminationState.Terminated = t
			reason, msg := cs.waitReason, cs.waitMsg
			if reason == "" {
				reason = "ContainerCreating"
			}
			out.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: msg}
		} else {
			out.State.Terminated = t
		}
	default:
		out.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
	}
	return out
}

// terminated describes an exited run.
func (pw *podWorker) terminated(c *corev1.Container, r *container.ContainerStatus, cs *ctrState) *corev1.ContainerStateTerminated {
	t := &corev1.ContainerStateTerminated{
		ExitCode:    int32(r.ExitCode),
		StartedAt:   mtime(r.StartedAt),
		FinishedAt:  mtime(r.FinishedAt),
		ContainerID: "containerd://" + r.ID,
	}
	switch {
	case r.OOMKilled:
		t.Reason = "OOMKilled"
	case r.ExitCode == 0:
		t.Reason = "Completed"
	default:
		t.Reason = "Error"
	}
	if r.ExitCode > 128 {
		t.Signal = int32(r.ExitCode - 128)
	}
	t.Message = cs.killed[r.ID]
	t.Message = joinMsg(t.Message, pw.terminationMessage(c, r))
	return t
}

func joinMsg(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "\n" + b
}

// terminationMessage reads what the run wrote to its terminationMessagePath
// (at most 4 KiB), or the tail of its log when the policy says so.
func (pw *podWorker) terminationMessage(c *corev1.Container, r *container.ContainerStatus) string {
	p := pw.a.podDir(pw.uid) + "/termination/" + c.Name + "-" + r.Labels[labelAttempt]
	if b, err := readAtMost(p, 4096); err == nil && len(b) > 0 {
		return string(b)
	}
	if c.TerminationMessagePolicy == corev1.TerminationMessageFallbackToLogsOnError && r.ExitCode != 0 && r.LogPath != "" {
		return tailLog(r.LogPath, 80, 2048)
	}
	return ""
}

func readAtMost(p string, n int) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	k, _ := f.Read(b)
	return b[:k], nil
}

// imageID is the Kubernetes imageID of a run: the image config digest.
func imageID(r *container.ContainerStatus) string {
	if r.ImageDigest == "" {
		return ""
	}
	return r.ImageDigest
}

// keepTransitionTimes keeps a condition's lastTransitionTime while its
// status does not change, so an unchanged pod writes nothing.
func keepTransitionTimes(st, old *corev1.PodStatus) {
	for i := range st.Conditions {
		c := &st.Conditions[i]
		for _, o := range old.Conditions {
			if o.Type == c.Type && o.Status == c.Status {
				c.LastTransitionTime = o.LastTransitionTime
				if o.LastProbeTime.IsZero() {
					c.LastProbeTime = o.LastProbeTime
				}
			}
		}
	}
	if old.StartTime != nil && st.StartTime != nil {
		st.StartTime = old.StartTime
	}
	if equality.Semantic.DeepEqual(st.Conditions, old.Conditions) {
		st.Conditions = old.Conditions
	}
}

// qosClass is the pod's QoS class as Kubernetes computes it.
func qosClass(pod *corev1.Pod) corev1.PodQOSClass {
	all := append(append([]corev1.Container(nil), pod.Spec.InitContainers...), pod.Spec.Containers...)
	any, guaranteed := false, true
	for _, c := range all {
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			req, hasReq := c.Resources.Requests[r]
			lim, hasLim := c.Resources.Limits[r]
			if hasReq || hasLim {
				any = true
			}
			if !hasLim || (hasReq && req.Cmp(lim) != 0) {
				guaranteed = false
			}
		}
	}
	switch {
	case !any:
		return corev1.PodQOSBestEffort
	case guaranteed:
		return corev1.PodQOSGuaranteed
	}
	return corev1.PodQOSBurstable
}

// sortedKeys is a helper for stable output.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
