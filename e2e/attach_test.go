package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/e2e/images"
	"github.com/shoal-dev/shoal/node/localcluster"
)

// attachSession is a `kubectl attach` left running, its output collected.
type attachSession struct {
	stdin  io.WriteCloser
	out    *syncedBuffer
	cancel context.CancelFunc
	done   chan error
}

type syncedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startAttach runs kubectl 1.<minor> with args in the lan namespace and
// leaves it running, stdin open, until stop.
func startAttach(t *testing.T, c *localcluster.Cluster, minor string, args ...string) *attachSession {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	cmd := c.Command(ctx, "/usr/lib/google-cloud-sdk/bin/kubectl.1."+minor, args...)
	cmd.Env = append(cmd.Env, "HOME="+t.TempDir())
	s := &attachSession{out: &syncedBuffer{}, cancel: cancel, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = s.out, s.out
	var err error
	if s.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() { s.done <- cmd.Wait() }()
	t.Cleanup(s.stop)
	return s
}

// waitFor waits until the session's output has want.
func (s *attachSession) waitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for !strings.Contains(s.out.String(), want) {
		select {
		case err := <-s.done:
			s.done <- err
			t.Fatalf("kubectl ended (%v) without printing %q:\n%s", err, want, s.out.String())
		case <-deadline:
			t.Fatalf("kubectl did not print %q within 30s:\n%s", want, s.out.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop kills kubectl: the client goes away without closing stdin.
func (s *attachSession) stop() {
	s.cancel()
	err := <-s.done
	s.done <- err
}

// catPod runs cat on its stdin (stdin: true, not stdinOnce), with a ticker
// in the background printing to the same stdout.
func catPod(name, nodeName string) *corev1.Pod {
	p := busyboxPod(name, nodeName, corev1.RestartPolicyAlways, `i=0; while :; do echo "tick $i"; i=$((i+1)); sleep 0.2; done & exec cat`)
	p.Spec.Containers[0].Stdin = true
	p.Spec.TerminationGracePeriodSeconds = ptr(int64(1))
	return p
}

// TestAttach: kubectl attach -i and kubectl run -i against containers with
// stdin (node/agent serveAttach, the containerd runtime's FIFO IO and its
// detached logger), through a node other than the pod's, with an old
// kubectl (1.28: SPDY) and a new one (1.33: WebSocket v5); then a kill -9
// of the pod's agent, which the container, its stdin and its log survive.
func TestAttach(t *testing.T) {
	c := newCluster(t, 2)
	importImages(t, c, "n2")
	cs := clientsetFor(t, c, "n1") // the kubeconfig's node too: pods run on n2
	ctx := context.Background()
	talker := busyboxPod("talker", "n2", corev1.RestartPolicyAlways, `i=0; while :; do echo "talk $i"; i=$((i+1)); sleep 0.2; done`)
	talker.Spec.TerminationGracePeriodSeconds = ptr(int64(1))
	for _, p := range []*corev1.Pod{catPod("cat", "n2"), talker} {
		if _, err := cs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	isRunning := func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning }
	cat := waitPod(t, cs, "default", "cat", 60*time.Second, "Running", isRunning)
	waitPod(t, cs, "default", "talker", 60*time.Second, "Running", isRunning)

	for _, minor := range []string{"28", "33"} {
		t.Run("kubectl-1."+minor, func(t *testing.T) {
			// attach -i: what is typed reaches cat, its echo comes back;
			// a client that goes away leaves cat's stdin open for the next.
			for round := range 2 {
				s := startAttach(t, c, minor, "attach", "-i", "cat")
				line := fmt.Sprintf("hello %s.%d", minor, round)
				// Typed until echoed: what arrives before the session is
				// up is not lost, but kubectl may not have connected yet.
				s.waitFor(t, "tick")
				if _, err := io.WriteString(s.stdin, line+"\n"); err != nil {
					t.Fatal(err)
				}
				s.waitFor(t, line+"\n")
				s.stop()
			}

			// run -i --rm: stdin piped into sh (stdin and stdinOnce), its
			// output printed, the pod removed afterwards.
			name := "sh-" + minor
			script := "echo hello from sh\necho $((6*7))\n"
			start := time.Now()
			out, _, err := kubectlAt(t, c, minor, strings.NewReader(script), 2*time.Minute,
				"run", name, "-i", "--rm", "--restart=Never", "--image="+images.BusyboxRef, "--image-pull-policy=Never",
				`--overrides={"apiVersion":"v1","spec":{"nodeName":"n2"}}`, "--", "sh")
			if err != nil {
				t.Fatalf("kubectl run -i --rm: %v\n%s", err, out)
			}
			if !strings.Contains(out, "hello from sh\n42\n") {
				t.Errorf("kubectl run -i --rm printed %q, want the output of the piped commands", out)
			}
			t.Logf("kubectl run -i --rm took %s", time.Since(start).Round(10*time.Millisecond))
			eventually(t, 60*time.Second, func() error {
				_, err := cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
				if !apierrors.IsNotFound(err) {
					return fmt.Errorf("pod %s after run --rm: %v, want it gone", name, err)
				}
				return nil
			})

			// A container without stdin: plain attach streams its output,
			// attach -i says why it cannot.
			s := startAttach(t, c, minor, "attach", "talker")
			s.waitFor(t, "talk ")
			s.stop()
			out, _, err = kubectlAt(t, c, minor, strings.NewReader("x\n"), time.Minute, "attach", "-i", "talker")
			if err == nil || !strings.Contains(err.Error(), "Stdin is not enabled for container main of pod talker") {
				t.Errorf("attach -i to a container without stdin: %v\n%s", err, out)
			} else {
				t.Logf("attach -i to a container without stdin: %v", err)
			}
		})
	}

	t.Run("agent-kill", func(t *testing.T) {
		// kill -9 of n2's agent: cat runs on, its detached logger writes
		// its log, and once the agent is back attach -i reaches the same
		// stdin.
		logPath := containerLog(t, node(t, c, "n2").DataDir, string(cat.UID))
		before := cat.Status.ContainerStatuses[0]
		if err := c.Kill("n2"); err != nil {
			t.Fatal(err)
		}
		size := func() int64 {
			st, err := os.Stat(logPath)
			if err != nil {
				t.Fatal(err)
			}
			return st.Size()
		}
		grown := size()
		eventually(t, 10*time.Second, func() error {
			if s := size(); s <= grown+100 {
				return fmt.Errorf("log %s at %d bytes, %d before", logPath, s, grown)
			}
			return nil
		})
		if err := c.Start("n2"); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		if err := c.WaitReady(wctx, "n2"); err != nil {
			t.Fatal(err)
		}
		s := startAttach(t, c, "33", "attach", "-i", "cat")
		s.waitFor(t, "tick")
		io.WriteString(s.stdin, "after the restart\n")
		s.waitFor(t, "after the restart\n")
		s.stop()
		after := waitPod(t, cs, "default", "cat", 30*time.Second, "Running", isRunning).Status.ContainerStatuses[0]
		if after.ContainerID != before.ContainerID || after.RestartCount != 0 {
			t.Errorf("cat's container changed across the agent restart: %s (%d restarts) → %s (%d)", before.ContainerID, before.RestartCount, after.ContainerID, after.RestartCount)
		}
	})
}

// containerLog finds the log of the first run of container main of the
// pod with uid under a node's data dir.
func containerLog(t *testing.T, dataDir, uid string) string {
	t.Helper()
	var found string
	filepath.WalkDir(dataDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, filepath.Join(uid, "logs", "main", "0.log")) {
			found = p
			return filepath.SkipAll
		}
		return nil
	})
	if found == "" {
		t.Fatalf("no log of pod %s under %s", uid, dataDir)
	}
	return found
}
