package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/node/localcluster"
)

// kubectlAt runs one kubectl minor version (the cloud SDK installs
// kubectl.1.27 … kubectl.1.33 beside its dispatcher) in the lan namespace.
func kubectlAt(t testing.TB, c *localcluster.Cluster, minor string, stdin io.Reader, timeout time.Duration, args ...string) (string, int, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := c.Command(ctx, "/usr/lib/google-cloud-sdk/bin/kubectl.1."+minor, args...)
	cmd.Env = append(cmd.Env, "HOME="+t.TempDir())
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	if err != nil {
		err = fmt.Errorf("kubectl 1.%s %s: %w\n%s", minor, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), code, err
}

// TestKubectlLogsExec: kubectl logs (plain, --tail, --timestamps, -f,
// --previous), exec (stdout, stderr, stdin, exit codes) and port-forward,
// through a node other than the pod's, with an old kubectl (1.28: SPDY) and
// a new one (1.32: WebSocket v5, port-forward tunnelled over WebSocket).
func TestKubectlLogsExec(t *testing.T) {
	c := newCluster(t, 2, func(cfg *localcluster.Config) {
		cfg.AgentArgs = append(cfg.AgentArgs, "--crashloop-backoff=1s")
	})
	importImages(t, c, "n2")
	cs := clientsetFor(t, c, "n1") // the kubeconfig's node too: pods run on n2
	ctx := context.Background()
	talker := busyboxPod("talker", "n2", corev1.RestartPolicyAlways,
		// stdout and stderr are separate pipes with no order between them:
		// the pause makes "to stderr" the last line for --tail=1.
		`for i in 1 2 3; do echo "line $i"; done; sleep 0.3; echo "to stderr" >&2; sleep 600`)
	talker.Spec.TerminationGracePeriodSeconds = ptr(int64(1))
	crasher := busyboxPod("crasher", "n2", corev1.RestartPolicyAlways, `echo "attempt at $(cat /proc/uptime)"; exit 1`)
	for _, p := range []*corev1.Pod{talker, crasher, echoPod("web", "n2")} {
		if _, err := cs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitPod(t, cs, "default", "talker", 60*time.Second, "Running", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
	waitPod(t, cs, "default", "web", 60*time.Second, "Ready", podReady)
	waitPod(t, cs, "default", "crasher", 60*time.Second, "restarted", func(p *corev1.Pod) bool {
		return len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].RestartCount >= 1
	})
	tsLine := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z `)

	for i, minor := range []string{"28", "32"} {
		t.Run("kubectl-1."+minor, func(t *testing.T) {
			run := func(stdin io.Reader, args ...string) string {
				t.Helper()
				out, _, err := kubectlAt(t, c, minor, stdin, time.Minute, args...)
				if err != nil {
					t.Fatal(err)
				}
				return out
			}
			eventually(t, 10*time.Second, func() error {
				out, _, err := kubectlAt(t, c, minor, nil, time.Minute, "logs", "talker")
				if err != nil {
					return err
				}
				for _, want := range []string{"line 1\n", "line 3\n", "to stderr\n"} {
					if !strings.Contains(out, want) {
						return fmt.Errorf("logs talker: %q lacks %q", out, want)
					}
				}
				return nil
			})
			if out := run(nil, "logs", "talker", "--tail=1"); out != "to stderr\n" {
				t.Errorf("logs --tail=1: %q", out)
			}
			for _, l := range strings.Split(strings.TrimSpace(run(nil, "logs", "talker", "--timestamps")), "\n") {
				if !tsLine.MatchString(l) {
					t.Errorf("logs --timestamps: line %q has no timestamp", l)
				}
			}
			// describe shows the agent's events.
			eventually(t, 10*time.Second, func() error {
				out, _, err := kubectlAt(t, c, minor, nil, time.Minute, "describe", "pod", "crasher")
				if err != nil {
					return err
				}
				for _, want := range []string{"Created container main", "Started container main", "BackOff", "Back-off restarting failed container main"} {
					if !strings.Contains(out, want) {
						return fmt.Errorf("describe pod crasher lacks %q:\n%s", want, out)
					}
				}
				return nil
			})
			if out := run(nil, "logs", "crasher", "--previous"); !strings.HasPrefix(out, "attempt at ") {
				t.Errorf("logs --previous: %q", out)
			}

			// -f follows until the container ends.
			name := fmt.Sprintf("counter-%d", i)
			counter := busyboxPod(name, "n2", corev1.RestartPolicyNever, `for i in 1 2 3 4 5; do echo "tick $i"; sleep 0.4; done`)
			if _, err := cs.CoreV1().Pods("default").Create(ctx, counter, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			waitPod(t, cs, "default", name, 60*time.Second, "started", func(p *corev1.Pod) bool { return p.Status.Phase != corev1.PodPending })
			start := time.Now()
			out := run(nil, "logs", "-f", name)
			if want := "tick 1\ntick 2\ntick 3\ntick 4\ntick 5\n"; out != want {
				t.Errorf("logs -f: %q, want %q", out, want)
			}
			t.Logf("logs -f returned %s after the container started", time.Since(start).Round(10*time.Millisecond))

			// exec: output, stderr, exit code, stdin.
			if out := run(nil, "exec", "talker", "--", "hostname"); out != "talker\n" {
				t.Errorf("exec hostname: %q", out)
			}
			out, code, err := kubectlAt(t, c, minor, nil, time.Minute, "exec", "talker", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
			if code != 3 || out != "out\n" || err == nil || !strings.Contains(err.Error(), "err") {
				t.Errorf("exec exit 3: code %d out %q err %v", code, out, err)
			}
			if out := run(strings.NewReader("hello from stdin\n"), "exec", "-i", "talker", "--", "cat"); out != "hello from stdin\n" {
				t.Errorf("exec -i cat: %q", out)
			}
			if out := run(nil, "exec", "talker", "--", "cat", "/etc/resolv.conf"); !strings.Contains(out, "nameserver 10.43.0.10") || !strings.Contains(out, "search default.svc.cluster.local svc.cluster.local cluster.local") || !strings.Contains(out, "ndots:5") {
				t.Errorf("resolv.conf in the pod: %q", out)
			}

			// port-forward, then a request through it from the lan namespace.
			port := 18080 + i
			pctx, cancel := context.WithCancel(ctx)
			defer cancel()
			pf := c.Command(pctx, "/usr/lib/google-cloud-sdk/bin/kubectl.1."+minor, "port-forward", "pod/web", fmt.Sprintf("%d:8080", port))
			pf.Env = append(pf.Env, "HOME="+t.TempDir())
			var pfOut bytes.Buffer
			pf.Stdout, pf.Stderr = &pfOut, &pfOut
			if err := pf.Start(); err != nil {
				t.Fatal(err)
			}
			defer pf.Wait()
			defer cancel()
			eventually(t, 20*time.Second, func() error {
				ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				out, err := c.Command(ctx, "sh", "-c", fmt.Sprintf(`printf 'GET /pf HTTP/1.0\r\n\r\n' | busybox nc 127.0.0.1 %d`, port)).CombinedOutput()
				if err != nil || !strings.Contains(string(out), "web ") || !strings.Contains(string(out), " GET /pf") {
					return fmt.Errorf("through port-forward: %v %q (kubectl: %q)", err, out, pfOut.String())
				}
				return nil
			})
		})
	}
}
