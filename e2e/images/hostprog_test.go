package images

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"
)

// hostProgram is an image's binary run on the host, on a free port
// ($PORT=0), for the archive tests.
type hostProgram struct {
	name    string
	path    string
	cmd     *exec.Cmd
	stderr  syncBuffer
	exited  chan struct{}
	waitErr error
	port    string // where it said it listens
}

var listeningRE = regexp.MustCompile(`listening on \S*:(\d+)`)

// startHostProgram writes bin to a file named name, runs it with env (and
// PORT=0) and waits until it says where it listens. It is killed at the
// end of the test if it still runs.
func startHostProgram(t *testing.T, name string, bin []byte, env ...string) *hostProgram {
	t.Helper()
	p := &hostProgram{name: name, path: filepath.Join(t.TempDir(), name), exited: make(chan struct{})}
	if err := os.WriteFile(p.path, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(p.path)
	p.cmd.Env = append(env, "PORT=0")
	p.cmd.Stderr = &p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.waitErr = p.cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() { p.cmd.Process.Kill(); <-p.exited })
	eventually(t, 10*time.Second, name+" listening", func() error {
		m := listeningRE.FindStringSubmatch(p.stderr.String())
		if m == nil {
			return fmt.Errorf("stderr %q", p.stderr.String())
		}
		p.port = m[1]
		return nil
	})
	return p
}

// stopGracefully sends SIGTERM and expects exit status 0 within 5 s; it
// returns how long the exit took.
func (p *hostProgram) stopGracefully(t *testing.T) time.Duration {
	t.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
		if p.waitErr != nil {
			t.Errorf("exit after SIGTERM: %v, stderr %q", p.waitErr, p.stderr.String())
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%s still running 5s after SIGTERM", p.name)
	}
	return time.Since(start)
}
