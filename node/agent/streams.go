package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/node/agent/streaming"
	"github.com/shoal-dev/shoal/node/container"
	"github.com/shoal-dev/shoal/node/container/logfile"
)

// ServePodStream serves pods/log, exec, attach and portforward of a pod of
// this node. The caller has authenticated and authorized the request.
func (a *Agent) ServePodStream(w http.ResponseWriter, r *http.Request, pod *corev1.Pod, sub string) {
	pw := a.worker(pod.UID)
	if pw == nil {
		writeStatus(w, apierrors.NewBadRequest(fmt.Sprintf("pod %s is not running on this node (yet)", pod.Name)))
		return
	}
	if sub == "portforward" {
		a.servePortForward(w, r, pod, pw)
		return
	}
	name, err := pickContainer(pod, r.URL.Query().Get("container"), sub == "log")
	if err != nil {
		writeStatus(w, err)
		return
	}
	switch sub {
	case "log":
		a.serveLog(w, r, pod, pw, name)
	case "exec", "attach":
		a.serveSession(w, r, pod, pw, name, sub)
	default:
		writeStatus(w, apierrors.NewNotFound(corev1.Resource("pods/"+sub), pod.Name))
	}
}

// pickContainer is the container a request is about: the one named, else
// the only one, else the default-container annotation.
func pickContainer(pod *corev1.Pod, name string, withInit bool) (string, *apierrors.StatusError) {
	var names []string
	for _, c := range pod.Spec.Containers {
		names = append(names, c.Name)
	}
	all := names
	if withInit {
		for _, c := range pod.Spec.InitContainers {
			all = append(all, c.Name)
		}
	}
	if name == "" {
		if d := pod.Annotations["kubectl.kubernetes.io/default-container"]; d != "" {
			name = d
		} else if len(names) == 1 {
			name = names[0]
		} else {
			return "", apierrors.NewBadRequest(fmt.Sprintf("a container name must be specified for pod %s, choose one of: %v", pod.Name, all))
		}
	}
	for _, n := range all {
		if n == name {
			return name, nil
		}
	}
	return "", apierrors.NewBadRequest(fmt.Sprintf("container %s is not valid for pod %s", name, pod.Name))
}

// serveLog serves pods/log with Kubernetes' options.
func (a *Agent) serveLog(w http.ResponseWriter, r *http.Request, pod *corev1.Pod, pw *podWorker, name string) {
	q := r.URL.Query()
	runs := pw.runs(name)
	var run *container.ContainerStatus
	if isTrue(q.Get("previous")) {
		if len(runs) < 2 {
			writeStatus(w, apierrors.NewBadRequest(fmt.Sprintf("previous terminated container %q in pod %q not found", name, pod.Name)))
			return
		}
		run = &runs[len(runs)-2]
	} else {
		if len(runs) == 0 {
			writeStatus(w, apierrors.NewBadRequest(fmt.Sprintf("container %q in pod %q is waiting to start: %s", name, pod.Name, waitingReason(pod, name))))
			return
		}
		run = &runs[len(runs)-1]
	}
	opts := logfile.ReadOptions{Follow: isTrue(q.Get("follow")), Timestamps: isTrue(q.Get("timestamps"))}
	var err error
	if opts.TailLines, err = optInt(q, "tailLines"); err != nil {
		writeStatus(w, apierrors.NewBadRequest(err.Error()))
		return
	}
	if opts.LimitBytes, err = optInt(q, "limitBytes"); err != nil {
		writeStatus(w, apierrors.NewBadRequest(err.Error()))
		return
	}
	if s, err := optInt(q, "sinceSeconds"); err != nil {
		writeStatus(w, apierrors.NewBadRequest(err.Error()))
		return
	} else if s != nil {
		opts.Since = a.cfg.Now().Add(-time.Duration(*s) * time.Second)
	}
	if v := q.Get("sinceTime"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			writeStatus(w, apierrors.NewBadRequest(fmt.Sprintf("sinceTime %q is not RFC 3339", v)))
			return
		}
		opts.Since = t
	}
	if opts.Follow && run.State != container.StateExited {
		done := make(chan struct{})
		opts.Done = done
		go a.closeOnExit(r.Context(), run.ID, done)
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	if err := logfile.Read(r.Context(), run.LogPath, opts, w); err != nil && r.Context().Err() == nil {
		a.log.Debug("agent: serving log", "pod", pod.Namespace+"/"+pod.Name, "container", name, "err", err)
	}
}

// closeOnExit closes done once the container is no longer running.
func (a *Agent) closeOnExit(ctx context.Context, id string, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		st, err := a.cfg.Runtime.Status(ctx, id)
		if err != nil || st.State == container.StateExited {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func waitingReason(pod *corev1.Pod, name string) string {
	for _, s := range append(append([]corev1.ContainerStatus(nil), pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...) {
		if s.Name == name && s.State.Waiting != nil {
			return s.State.Waiting.Reason
		}
	}
	return "ContainerCreating"
}

// serveSession serves exec and attach.
func (a *Agent) serveSession(w http.ResponseWriter, r *http.Request, pod *corev1.Pod, pw *podWorker, name, sub string) {
	runs := pw.runs(name)
	if len(runs) == 0 || runs[len(runs)-1].State != container.StateRunning {
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			writeStatus(w, apierrors.NewBadRequest(fmt.Sprintf("cannot %s into a container in a completed pod; current phase is %s", sub, pod.Status.Phase)))
			return
		}
		writeStatus(w, apierrors.NewBadRequest(fmt.Sprintf("container %s is not running", name)))
		return
	}
	run := runs[len(runs)-1]
	if sub == "attach" {
		c := podContainer(pod, name)
		if c == nil {
			writeStatus(w, apierrors.NewBadRequest(fmt.Sprintf("cannot attach to init container %s of pod %s", name, pod.Name)))
			return
		}
		a.serveAttach(w, r, pod, run, c)
		return
	}
	cmd, opts, err := streaming.ParseExecRequest(r)
	if err != nil {
		writeStatus(w, asStatus(err))
		return
	}
	err = streaming.ServeExec(w, r, cmd, opts, func(ctx context.Context, cmd []string, s streaming.Streams) (int, error) {
		return a.cfg.Runtime.Exec(ctx, run.ID, container.ExecSpec{
			Cmd: cmd, Stdin: s.Stdin, Stdout: s.Stdout, Stderr: s.Stderr, TTY: s.TTY, Resize: resizes(s.Resize),
		})
	})
	if err != nil {
		a.log.Debug("agent: exec", "pod", pod.Namespace+"/"+pod.Name, "container", name, "err", err)
	}
}

// attachTail bounds how far back from the end of the log an attach
// session looks for the output stamped since it began.
const attachTail int64 = 1000

// serveAttach connects the client to the running container's main
// process. Output comes from the container's log, as the logger writes
// it, record by record (a prompt shows before its line ends), from the
// moment the session began: the output of what the client types is there
// however late the log's followers get going. With stdin (the container's
// spec must have stdin: true), what the client sends goes to the
// container's stdin; the client's end of stdin, or of the session, closes
// this session's writer, which ends a stdinOnce container's stdin for
// good. A terminal's resizes go to the container's terminal.
func (a *Agent) serveAttach(w http.ResponseWriter, r *http.Request, pod *corev1.Pod, run container.ContainerStatus, c *corev1.Container) {
	opts, err := streaming.ParseAttachRequest(r)
	if err != nil {
		writeStatus(w, asStatus(err))
		return
	}
	if opts.Stdin && !c.Stdin {
		writeStatus(w, apierrors.NewBadRequest(fmt.Sprintf("Stdin is not enabled for container %s of pod %s (its spec has no stdin: true): attach without -i", c.Name, pod.Name)))
		return
	}
	err = streaming.ServeAttach(w, r, opts, func(ctx context.Context, s streaming.Streams) error {
		// The logger stamps records with the wall clock.
		since := time.Now()
		var stdin io.WriteCloser
		if s.Stdin != nil {
			// Opened once the session is up: closing it spends a
			// stdinOnce container's stdin, which an upgrade that failed
			// (kubectl then retries over SPDY) must not.
			var err error
			if stdin, err = a.cfg.Runtime.AttachStdin(ctx, run.ID); errors.Is(err, container.ErrInvalid) {
				return fmt.Errorf("the stdin of container %s is closed: it is stdinOnce, and an earlier attach session had it", c.Name)
			} else if err != nil {
				return err
			}
			defer stdin.Close()
		}
		done := make(chan struct{})
		go a.closeOnExit(ctx, run.ID, done)
		errs := make(chan error, 2)
		n := 0
		for _, x := range []struct {
			w      io.Writer
			stream logfile.Stream
		}{{s.Stdout, logfile.Stdout}, {s.Stderr, logfile.Stderr}} {
			if x.w == nil {
				continue
			}
			n++
			ro := logfile.ReadOptions{Follow: true, TailLines: new(attachTail), Since: since, Chunks: true, Done: done, Stream: x.stream}
			if s.TTY {
				ro.Stream = "" // a terminal has one stream
			}
			go func() { errs <- logfile.Read(ctx, run.LogPath, ro, x.w) }()
		}
		if stdin != nil {
			go func() {
				if _, err := io.Copy(stdin, s.Stdin); err != nil && ctx.Err() == nil {
					a.log.Debug("agent: attach: copying stdin", "pod", pod.Namespace+"/"+pod.Name, "container", c.Name, "err", err)
				}
				// The client's end of stdin: a stdinOnce container's ends.
				if err := stdin.Close(); err != nil {
					a.log.Warn("agent: attach: closing stdin", "pod", pod.Namespace+"/"+pod.Name, "container", c.Name, "err", err)
				}
			}()
		}
		if s.Resize != nil {
			go func() {
				for sz := range s.Resize { // drained even when there is no terminal to resize
					if !c.TTY {
						continue
					}
					if err := a.cfg.Runtime.ResizeTTY(ctx, run.ID, container.Size{Width: sz.Width, Height: sz.Height}); err != nil && ctx.Err() == nil {
						a.log.Debug("agent: attach: resizing the terminal", "pod", pod.Namespace+"/"+pod.Name, "container", c.Name, "err", err)
					}
				}
			}()
		}
		var first error
		for range n {
			if err := <-errs; err != nil && first == nil && ctx.Err() == nil {
				first = err
			}
		}
		return first
	})
	if err != nil {
		a.log.Debug("agent: attach", "pod", pod.Namespace+"/"+pod.Name, "err", err)
	}
}

// podContainer is the regular container called name, nil if none is.
func podContainer(pod *corev1.Pod, name string) *corev1.Container {
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == name {
			return &pod.Spec.Containers[i]
		}
	}
	return nil
}

// servePortForward connects the client to ports of the pod.
func (a *Agent) servePortForward(w http.ResponseWriter, r *http.Request, pod *corev1.Pod, pw *podWorker) {
	ports, err := streaming.ParsePortForwardRequest(r)
	if err != nil {
		writeStatus(w, asStatus(err))
		return
	}
	ip := pod.Status.PodIP
	if ip == "" {
		writeStatus(w, apierrors.NewBadRequest(fmt.Sprintf("pod %s has no IP address yet", pod.Name)))
		return
	}
	var d net.Dialer
	err = streaming.ServePortForward(w, r, ports, func(ctx context.Context, port int32) (net.Conn, error) {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		return d.DialContext(dctx, "tcp", net.JoinHostPort(ip, strconv.Itoa(int(port))))
	})
	if err != nil {
		a.log.Debug("agent: port-forward", "pod", pod.Namespace+"/"+pod.Name, "err", err)
	}
}

// resizes converts terminal sizes from the stream to the runtime's type.
func resizes(in <-chan streaming.Size) <-chan container.Size {
	if in == nil {
		return nil
	}
	out := make(chan container.Size, 1)
	go func() {
		defer close(out)
		for s := range in {
			out <- container.Size{Width: s.Width, Height: s.Height}
		}
	}()
	return out
}

func isTrue(v string) bool { return v == "true" || v == "1" }

func optInt(q map[string][]string, key string) (*int64, error) {
	vs := q[key]
	if len(vs) == 0 || vs[0] == "" {
		return nil, nil
	}
	n, err := strconv.ParseInt(vs[0], 10, 64)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("%s must be a non-negative integer, not %q", key, vs[0])
	}
	return &n, nil
}

func asStatus(err error) *apierrors.StatusError {
	if se, ok := err.(*apierrors.StatusError); ok {
		return se
	}
	return apierrors.NewBadRequest(err.Error())
}

// writeStatus answers with a Kubernetes Status.
func writeStatus(w http.ResponseWriter, err *apierrors.StatusError) {
	st := err.ErrStatus
	st.TypeMeta = metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(int(st.Code))
	_ = json.NewEncoder(w).Encode(&st)
}
