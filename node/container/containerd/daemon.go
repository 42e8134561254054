package containerd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	ctd "github.com/containerd/containerd"
)

// DaemonConfig configures a private containerd. It is not mutated after
// StartDaemon.
type DaemonConfig struct {
	// Dir holds everything of this daemon: root/, state/, containerd.sock,
	// config.toml, runc/ (runc state), fifo/ (exec FIFOs), opt/, the pid
	// file and containerd.log. Keep it short: the socket path must fit in
	// 107 bytes.
	Dir string
	// Binary is the containerd executable, looked up in PATH.
	Binary string
	// Output receives the daemon's stdout and stderr; nil appends them to
	// Dir/containerd.log.
	Output io.Writer
	// LogLevel is containerd's log level.
	LogLevel string
	// ReadyTimeout bounds the wait for the daemon to serve.
	ReadyTimeout time.Duration
	// RestartBackoff is the first delay before restarting a daemon that
	// died; it doubles up to 10 s while the daemon keeps dying at once.
	RestartBackoff time.Duration
	// Logf receives supervision messages; nil discards them.
	Logf func(format string, args ...any)
}

// DefaultDaemonConfig is a usable config once Dir is set.
func DefaultDaemonConfig(dir string) DaemonConfig {
	return DaemonConfig{Dir: dir, Binary: "containerd", LogLevel: "warn", ReadyTimeout: 20 * time.Second, RestartBackoff: 200 * time.Millisecond}
}

// maxSocketPath is the longest unix socket path (sun_path is 108 bytes).
const maxSocketPath = 107

// Validate reports a config StartDaemon cannot use.
func (c DaemonConfig) Validate() error {
	if c.Dir == "" || !filepath.IsAbs(c.Dir) {
		return fmt.Errorf("containerd daemon: dir %q must be absolute", c.Dir)
	}
	if n := len(filepath.Join(c.Dir, "containerd.sock.ttrpc")); n > maxSocketPath {
		return fmt.Errorf("containerd daemon: dir %q too long: socket paths would be %d bytes (max %d)", c.Dir, n, maxSocketPath)
	}
	if c.Binary == "" || c.ReadyTimeout <= 0 || c.RestartBackoff <= 0 {
		return errors.New("containerd daemon: binary, ready timeout and restart backoff must be set")
	}
	return nil
}

// Daemon is a containerd process this node started, restarted whenever it
// dies until Stop.
type Daemon struct {
	cfg    DaemonConfig
	binary string        // resolved path
	exited chan struct{} // closed when supervision has ended
	stopC  chan struct{} // closed by Stop

	mu       sync.Mutex
	cmd      *exec.Cmd // guarded by mu: the current process
	stopping bool      // guarded by mu
	restarts int       // guarded by mu
	logFile  *os.File  // guarded by mu; nil when Output is set
}

// Paths under DaemonConfig.Dir.
func (c DaemonConfig) socket() string     { return filepath.Join(c.Dir, "containerd.sock") }
func (c DaemonConfig) configFile() string { return filepath.Join(c.Dir, "config.toml") }
func (c DaemonConfig) pidFile() string    { return filepath.Join(c.Dir, "containerd.pid") }
func (c DaemonConfig) runcRoot() string   { return filepath.Join(c.Dir, "runc") }
func (c DaemonConfig) fifoDir() string    { return filepath.Join(c.Dir, "fifo") }

// StartDaemon writes the config, replaces a daemon a previous run of this
// node left on the same Dir (found by pid file and command line), starts
// containerd and waits until it serves. The daemon's lifetime is not tied
// to ctx: call Stop.
func StartDaemon(ctx context.Context, cfg DaemonConfig) (*Daemon, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	bin, err := exec.LookPath(cfg.Binary)
	if err != nil {
		return nil, fmt.Errorf("containerd daemon: %w", err)
	}
	for _, d := range []string{cfg.Dir, filepath.Join(cfg.Dir, "root"), filepath.Join(cfg.Dir, "state"), cfg.runcRoot(), cfg.fifoDir(), filepath.Join(cfg.Dir, "opt")} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, fmt.Errorf("containerd daemon: %w", err)
		}
	}
	if err := os.WriteFile(cfg.configFile(), []byte(daemonTOML(cfg)), 0o600); err != nil {
		return nil, fmt.Errorf("containerd daemon: %w", err)
	}
	d := &Daemon{cfg: cfg, binary: bin, exited: make(chan struct{}), stopC: make(chan struct{})}
	d.killStale()
	if cfg.Output == nil {
		f, err := os.OpenFile(filepath.Join(cfg.Dir, "containerd.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return nil, fmt.Errorf("containerd daemon: %w", err)
		}
		d.logFile = f
	}
	d.mu.Lock()
	err = d.spawnLocked()
	d.mu.Unlock()
	if err != nil {
		d.closeLog()
		return nil, err
	}
	go d.supervise()
	if err := d.waitReady(ctx); err != nil {
		d.Stop(context.Background())
		return nil, err
	}
	return d, nil
}

func daemonTOML(c DaemonConfig) string {
	q := func(s string) string { return fmt.Sprintf("%q", s) }
	return fmt.Sprintf(`version = 2
root = %s
state = %s
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = %s

[ttrpc]
  address = %s

[debug]
  level = %s

[plugins."io.containerd.internal.v1.opt"]
  path = %s

[timeouts]
  "io.containerd.timeout.bolt.open" = "10s"
`, q(filepath.Join(c.Dir, "root")), q(filepath.Join(c.Dir, "state")), q(c.socket()), q(c.socket()+".ttrpc"),
		q(c.LogLevel), q(filepath.Join(c.Dir, "opt")))
}

// spawnLocked starts one containerd process. Callers hold mu.
func (d *Daemon) spawnLocked() error {
	cmd := exec.Command(d.binary, "--config", d.cfg.configFile())
	if d.cfg.Output != nil {
		cmd.Stdout, cmd.Stderr = d.cfg.Output, d.cfg.Output
	} else {
		cmd.Stdout, cmd.Stderr = d.logFile, d.logFile
	}
	// Own process group: a terminal's ^C to the agent does not reach it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("containerd daemon: starting %s: %w", d.binary, err)
	}
	d.cmd = cmd
	if err := os.WriteFile(d.cfg.pidFile(), fmt.Appendf(nil, "%d\n", cmd.Process.Pid), 0o600); err != nil {
		d.logf("containerd daemon: writing pid file: %v", err)
	}
	return nil
}

// supervise reaps the daemon and restarts it until Stop.
func (d *Daemon) supervise() {
	defer close(d.exited)
	backoff := d.cfg.RestartBackoff
	for {
		d.mu.Lock()
		cmd := d.cmd
		d.mu.Unlock()
		started := time.Now()
		err := cmd.Wait()
		for {
			d.mu.Lock()
			if d.stopping {
				d.mu.Unlock()
				return
			}
			d.mu.Unlock()
			if time.Since(started) > 30*time.Second {
				backoff = d.cfg.RestartBackoff
			}
			d.logf("containerd daemon (pid %d) exited: %v; restarting in %v", cmd.Process.Pid, err, backoff)
			select {
			case <-d.stopC:
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 10*time.Second)
			d.mu.Lock()
			if d.stopping {
				d.mu.Unlock()
				return
			}
			err = d.spawnLocked()
			if err == nil {
				d.restarts++
			}
			d.mu.Unlock()
			if err == nil {
				break
			}
			started = time.Now()
		}
	}
}

// waitReady polls the socket until containerd answers.
func (d *Daemon) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.ReadyTimeout)
	defer cancel()
	var last error
	for {
		if _, err := os.Stat(d.cfg.socket()); err == nil {
			client, err := ctd.New(d.cfg.socket(), ctd.WithTimeout(time.Second))
			if err == nil {
				ok, serr := client.IsServing(ctx)
				client.Close()
				if ok {
					return nil
				}
				err = serr
			}
			last = err
		}
		select {
		case <-d.exited:
			return errors.New("containerd daemon: supervisor stopped before the daemon served")
		case <-ctx.Done():
			return fmt.Errorf("containerd daemon at %s not serving after %v: %v (see its log)", d.cfg.socket(), d.cfg.ReadyTimeout, last)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Dir is the daemon's directory.
func (d *Daemon) Dir() string { return d.cfg.Dir }

// Address is the daemon's socket.
func (d *Daemon) Address() string { return d.cfg.socket() }

// RuntimeConfig is DefaultConfig pointed at this daemon, with runc state and
// exec FIFOs under its Dir.
func (d *Daemon) RuntimeConfig() Config {
	c := DefaultConfig()
	c.Address, c.RuncRoot, c.FIFODir = d.cfg.socket(), d.cfg.runcRoot(), d.cfg.fifoDir()
	return c
}

// Pid is the current daemon process's pid.
func (d *Daemon) Pid() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cmd.Process.Pid
}

// Restarts counts the times the daemon died and was started again.
func (d *Daemon) Restarts() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.restarts
}

// Stop ends supervision and terminates the process this Daemon started (by
// its pid: SIGTERM, then SIGKILL when ctx ends or after 10 s). Containers
// and their shims keep running. It is idempotent.
func (d *Daemon) Stop(ctx context.Context) error {
	d.mu.Lock()
	already := d.stopping
	d.stopping = true
	cmd := d.cmd
	d.mu.Unlock()
	if !already {
		close(d.stopC)
		_ = cmd.Process.Signal(syscall.SIGTERM)
	}
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case <-d.exited:
	case <-ctx.Done():
	case <-timer.C:
	}
	select {
	case <-d.exited:
	default:
		_ = cmd.Process.Kill()
		<-d.exited
	}
	os.Remove(d.cfg.pidFile())
	d.closeLog()
	return nil
}

func (d *Daemon) closeLog() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.logFile != nil {
		d.logFile.Close()
		d.logFile = nil
	}
}

func (d *Daemon) logf(format string, args ...any) {
	if d.cfg.Logf != nil {
		d.cfg.Logf(format, args...)
	}
}
