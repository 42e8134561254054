package agent

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"

	"github.com/shoal-dev/shoal/node/container"
	"github.com/shoal-dev/shoal/node/container/logfile"
)

// attachServer serves ServePodStream at /<pod>/<subresource>, the pod read
// from the store at each request, as the node's kubelet API does.
func attachServer(t *testing.T, h *harness, a *Agent) *httptest.Server {
	t.Helper()
	var handlers sync.WaitGroup
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handlers.Add(1)
		defer handlers.Done()
		name, sub, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		pod := h.pod(name)
		if pod == nil {
			http.NotFound(w, r)
			return
		}
		a.ServePodStream(w, r, pod, sub)
	}))
	t.Cleanup(func() {
		srv.Close()
		handlers.Wait() // hijacked connections outlive Close
	})
	return srv
}

// attachOpts are kubectl attach's query parameters.
type attachOpts struct {
	stdin, tty bool
}

// attach runs an attach session over SPDY (kubectl ≤ 1.29) or WebSocket
// (v5, kubectl ≥ 1.30) until it ends or ctx does.
func attach(ctx context.Context, t *testing.T, srv *httptest.Server, pod string, o attachOpts, wsock bool, so remotecommand.StreamOptions) error {
	t.Helper()
	q := url.Values{"container": {"main"}, "stdout": {"true"}}
	if o.stdin {
		q.Set("stdin", "true")
	}
	if o.tty {
		q.Set("tty", "true")
	} else {
		q.Set("stderr", "true")
	}
	u, _ := url.Parse(srv.URL + "/" + pod + "/attach?" + q.Encode())
	cfg := &rest.Config{Host: srv.URL}
	var e remotecommand.Executor
	var err error
	if wsock {
		e, err = remotecommand.NewWebSocketExecutor(cfg, "GET", u.String())
	} else {
		e, err = remotecommand.NewSPDYExecutor(cfg, "POST", u)
	}
	if err != nil {
		t.Fatal(err)
	}
	so.Tty = o.tty
	return e.StreamWithContext(ctx, so)
}

// lockedBuffer is a bytes.Buffer written by a session and read by the test.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// echoContainer plays the container's main process and its logger: what
// reaches its stdin is written to its log, on stdout, until stop.
func echoContainer(t *testing.T, h *harness, id, logPath string) (stop func()) {
	t.Helper()
	w, err := logfile.Open(logfile.Config{Path: logPath, PartialFlush: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		defer w.Close()
		seen := 0
		for {
			data, _ := h.rt.Stdin(id)
			if len(data) > seen {
				w.WriteStream(logfile.Stdout, data[seen:])
				seen = len(data)
			}
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { close(done); <-finished }) }
	t.Cleanup(stop)
	return stop
}

// runningMain starts a pod of one container "main" and returns its
// runtime status once it runs.
func runningMain(t *testing.T, h *harness, name string, c corev1.Container) container.ContainerStatus {
	t.Helper()
	c.Name, c.Image = "main", "busybox"
	pod := newPod(name, c)
	h.create(pod)
	p := h.waitPod(name, "running", running("main", 0))
	for _, cs := range h.podContainers(p.UID) {
		if cs.State == container.StateRunning {
			return cs
		}
	}
	t.Fatalf("no running container for pod %s", name)
	return container.ContainerStatus{}
}

func TestAttach(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	a, _ := h.start(h.config())
	srv := attachServer(t, h, a)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for _, wsock := range []bool{false, true} {
		proto := map[bool]string{false: "spdy", true: "websocket"}[wsock]
		t.Run(proto, func(t *testing.T) {
			// stdin: true: what the client sends reaches the container,
			// whose output comes back; the client's EOF does not end
			// the container's stdin, its exit ends the session.
			name := "cat-" + proto
			run := runningMain(t, h, name, corev1.Container{Stdin: true})
			stopEcho := echoContainer(t, h, run.ID, run.LogPath)
			var out lockedBuffer
			errc := make(chan error, 1)
			go func() {
				errc <- attach(ctx, t, srv, name, attachOpts{stdin: true}, wsock, remotecommand.StreamOptions{
					Stdin: strings.NewReader("hello from the client\n"), Stdout: &out, Stderr: io.Discard})
			}()
			h.waitFor("the echo", func() bool { return out.String() == "hello from the client\n" })
			if _, closed := h.rt.Stdin(run.ID); closed {
				t.Error("the container's stdin closed with the client's; it is not stdinOnce")
			}
			stopEcho()
			h.exit(run.ID, 0, false)
			if err := <-errc; err != nil {
				t.Errorf("attach ended with %v, want success at the container's exit", err)
			}

			// stdinOnce: the session's end closes the container's stdin;
			// the next session with stdin is refused.
			name = "once-" + proto
			run = runningMain(t, h, name, corev1.Container{Stdin: true, StdinOnce: true})
			echoContainer(t, h, run.ID, run.LogPath)
			sctx, scancel := context.WithCancel(ctx)
			in, inW := io.Pipe()
			out = lockedBuffer{}
			go func() {
				errc <- attach(sctx, t, srv, name, attachOpts{stdin: true}, wsock, remotecommand.StreamOptions{Stdin: in, Stdout: &out, Stderr: io.Discard})
			}()
			io.WriteString(inW, "once\n")
			h.waitFor("the echo", func() bool { return out.String() == "once\n" })
			if _, closed := h.rt.Stdin(run.ID); closed {
				t.Error("stdin closed while the session is on")
			}
			scancel() // the client goes away without closing stdin
			<-errc
			inW.Close()
			h.waitFor("stdin closed after the session", func() bool { _, closed := h.rt.Stdin(run.ID); return closed })
			err := attach(ctx, t, srv, name, attachOpts{stdin: true}, wsock, remotecommand.StreamOptions{Stdin: strings.NewReader("again\n"), Stdout: io.Discard, Stderr: io.Discard})
			if err == nil || !strings.Contains(err.Error(), "stdinOnce") {
				t.Errorf("second attach with stdin to a stdinOnce container: %v, want an error saying why", err)
			}
		})
	}

	t.Run("no stdin", func(t *testing.T) {
		// Without stdin: true, attach -i is refused before any upgrade,
		// plain attach streams the output from now on.
		run := runningMain(t, h, "quiet", corev1.Container{})
		err := attach(ctx, t, srv, "quiet", attachOpts{stdin: true}, false, remotecommand.StreamOptions{Stdin: strings.NewReader("x"), Stdout: io.Discard, Stderr: io.Discard})
		if err == nil || !strings.Contains(err.Error(), "Stdin is not enabled for container main of pod quiet") {
			t.Errorf("attach -i without stdin: %v", err)
		}
		w, err := logfile.Open(logfile.Config{Path: run.LogPath})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		w.WriteStream(logfile.Stdout, []byte("from before the session\n"))
		var out, errOut lockedBuffer
		errc := make(chan error, 1)
		go func() {
			errc <- attach(ctx, t, srv, "quiet", attachOpts{}, false, remotecommand.StreamOptions{Stdout: &out, Stderr: &errOut})
		}()
		for i := 0; !strings.Contains(out.String(), "tick") || !strings.Contains(errOut.String(), "oops"); i++ {
			if i == 1000 {
				t.Fatalf("no output reached the client: %q %q", out.String(), errOut.String())
			}
			w.WriteStream(logfile.Stdout, []byte(fmt.Sprintf("tick %d\n", i)))
			w.WriteStream(logfile.Stderr, []byte("oops\n"))
			time.Sleep(10 * time.Millisecond)
		}
		w.Close()
		h.exit(run.ID, 0, false)
		if err := <-errc; err != nil {
			t.Errorf("attach: %v", err)
		}
		if strings.Contains(out.String(), "from before") {
			t.Errorf("attach showed output from before the session: %q", out.String())
		}
	})

	t.Run("tty", func(t *testing.T) {
		// A terminal: its sizes go to the container.
		run := runningMain(t, h, "term", corev1.Container{Stdin: true, TTY: true})
		echoContainer(t, h, run.ID, run.LogPath)
		sizes := &sizeQueue{sizes: make(chan remotecommand.TerminalSize, 2)}
		sizes.sizes <- remotecommand.TerminalSize{Width: 81, Height: 25}
		sizes.sizes <- remotecommand.TerminalSize{Width: 80, Height: 24}
		close(sizes.sizes)
		var out lockedBuffer
		errc := make(chan error, 1)
		go func() {
			errc <- attach(ctx, t, srv, "term", attachOpts{stdin: true, tty: true}, true, remotecommand.StreamOptions{
				Stdin: strings.NewReader("ls\r"), Stdout: &out, TerminalSizeQueue: sizes})
		}()
		h.waitFor("the sizes", func() bool { return len(h.rt.Resizes(run.ID)) == 2 })
		if got := h.rt.Resizes(run.ID); got[1] != (container.Size{Width: 80, Height: 24}) {
			t.Errorf("resizes %v, want the client's last size last", got)
		}
		h.waitFor("the echo", func() bool { return out.String() == "ls\r" }) // a partial line, shown at once
		h.exit(run.ID, 0, false)
		if err := <-errc; err != nil {
			t.Errorf("attach: %v", err)
		}
	})
}

// sizeQueue hands out its sizes, then nil.
type sizeQueue struct {
	sizes chan remotecommand.TerminalSize
}

func (q *sizeQueue) Next() *remotecommand.TerminalSize {
	sz, ok := <-q.sizes
	if !ok {
		return nil
	}
	return &sz
}
