package containerd

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/node/container"
)

// Two nodes' daemons on one machine: same namespace, same container
// names would collide in runc state and FIFOs if they shared the defaults.
func TestTwoDaemonsDoNotCollide(t *testing.T) {
	d1, d2 := startDaemon(t), startDaemon(t)
	if d1.Address() == d2.Address() || d1.Pid() == d2.Pid() {
		t.Fatal("daemons share a socket or process")
	}
	cfg1, cfg2 := d1.RuntimeConfig(), d2.RuntimeConfig()
	cfg1.Namespace, cfg2.Namespace = "two", "two"
	rt1, rt2 := openRuntime(t, cfg1), openRuntime(t, cfg2)
	t.Cleanup(func() { removeAll(t, rt1); removeAll(t, rt2); RemoveCgroup("/two") })
	importBusybox(t, rt1)
	importBusybox(t, rt2)

	a := run(t, rt1, sleeper(container.ContainerSpec{ID: uniqueID("node1")}))
	b := run(t, rt2, sleeper(container.ContainerSpec{ID: uniqueID("node2")}))
	for _, tc := range []struct {
		rt       *Runtime
		mine     string
		other    string
		runcRoot string
	}{{rt1, a, b, cfg1.RuncRoot}, {rt2, b, a, cfg2.RuncRoot}} {
		list, err := tc.rt.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 1 || list[0].ID != tc.mine || list[0].State != container.StateRunning {
			t.Errorf("list = %+v, want only %s running", list, tc.mine)
		}
		if _, err := os.Stat(filepath.Join(tc.runcRoot, "two", tc.mine)); err != nil {
			t.Errorf("runc state of %s: %v", tc.mine, err)
		}
		if _, err := os.Stat(filepath.Join(tc.runcRoot, "two", tc.other)); err == nil {
			t.Errorf("runc state of the other node's %s in %s", tc.other, tc.runcRoot)
		}
		if code, out := execOut(t, tc.rt, tc.mine, "echo", "ok"); code != 0 || out != "ok\n" {
			t.Errorf("exec: %d %q", code, out)
		}
	}
	for _, d := range []*Daemon{d1, d2} {
		if entries, _ := os.ReadDir(d.RuntimeConfig().FIFODir); len(entries) != 0 {
			t.Errorf("exec FIFOs left in %s: %v", d.RuntimeConfig().FIFODir, entries)
		}
	}
	if _, err := os.Stat("/run/containerd/runc/two"); err == nil {
		t.Error("runc state went to the shared default /run/containerd/runc")
	}
}

// A daemon that dies is restarted; running containers, the runtime's
// connection and exit reporting all survive it.
func TestDaemonRestartsAndRuntimeRecovers(t *testing.T) {
	d := startDaemon(t)
	rt := newRuntime(t, d)
	importBusybox(t, rt)
	ctx := context.Background()
	id := run(t, rt, sleeper(container.ContainerSpec{}))
	st, _ := rt.Status(ctx, id)

	old := d.Pid()
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "daemon restart", func() error {
		if d.Restarts() < 1 || d.Pid() == old {
			return errStill
		}
		_, err := rt.Status(ctx, id)
		return err
	})
	st2, err := rt.Status(ctx, id)
	if err != nil || st2.State != container.StateRunning || st2.Pid != st.Pid {
		t.Fatalf("after daemon restart: %+v %v, want running as pid %d", st2, err, st.Pid)
	}
	// The waiter reconnected: the exit still arrives.
	if err := syscall.Kill(st.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if e := waitExit(t, rt, id, 15*time.Second); e.ExitCode != 137 {
		t.Errorf("exit = %+v", e)
	}
}

// A new Daemon on a Dir whose previous daemon outlived its agent replaces
// it, and keeps the containers.
func TestDaemonReplacesStaleDaemon(t *testing.T) {
	requireReal(t)
	dir := shortDir(t)
	d1, err := StartDaemon(context.Background(), DefaultDaemonConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	cfg := d1.RuntimeConfig()
	cfg.Namespace = "stale"
	rt := openRuntime(t, cfg)
	importBusybox(t, rt)
	id := run(t, rt, sleeper(container.ContainerSpec{}))
	rt.Close()
	stalePid := d1.Pid()
	// Simulate the agent dying: forget d1 without stopping its process.
	d1.mu.Lock()
	d1.stopping = true
	close(d1.stopC)
	d1.mu.Unlock()
	defer d1.closeLog()

	d2, err := StartDaemon(context.Background(), DefaultDaemonConfig(dir))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d2.Stop(context.Background()) })
	if d2.Pid() == stalePid {
		t.Fatal("same pid")
	}
	if data, err := os.ReadFile("/proc/" + strconv.Itoa(stalePid) + "/status"); err == nil && !strings.Contains(string(data), "State:\tZ") {
		t.Errorf("stale daemon %d still alive", stalePid)
	}
	rt2 := openRuntime(t, cfg)
	t.Cleanup(func() { removeAll(t, rt2); RemoveCgroup("/stale") })
	st, err := rt2.Status(context.Background(), id)
	if err != nil || st.State != container.StateRunning {
		t.Errorf("container after daemon replacement: %+v %v", st, err)
	}
}

func TestDaemonConfigValidate(t *testing.T) {
	long := "/" + strings.Repeat("d", 100)
	for _, c := range []DaemonConfig{DefaultDaemonConfig("relative"), DefaultDaemonConfig(long), {Dir: "/x"}} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v validated", c)
		}
	}
	if err := DefaultDaemonConfig("/var/lib/shoal/containerd").Validate(); err != nil {
		t.Error(err)
	}
}
