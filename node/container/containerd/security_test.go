package containerd

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/node/container"
)

func sleeper(spec container.ContainerSpec) container.ContainerSpec {
	spec.Command = []string{"sleep", "60"}
	return spec
}

func TestStopHonoursTermTrap(t *testing.T) {
	rt := newRuntime(t, sharedDaemon(t))
	importBusybox(t, rt)
	id := run(t, rt, container.ContainerSpec{Command: []string{"sh", "-c", "trap 'exit 7' TERM; sleep 100 & wait"}})
	time.Sleep(200 * time.Millisecond) // let sh install its trap
	start := time.Now()
	if err := rt.StopContainer(context.Background(), id, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("stop took %v: the TERM trap was not honoured", d)
	}
	if e := waitExit(t, rt, id, 5*time.Second); e.ExitCode != 7 {
		t.Errorf("exit = %+v, want code 7 from the trap", e)
	}
}

func TestOOMKilled(t *testing.T) {
	rt := newRuntime(t, sharedDaemon(t))
	importBusybox(t, rt)
	// tail keeps the whole newline-free /dev/zero in memory.
	id := run(t, rt, container.ContainerSpec{Command: []string{"tail", "/dev/zero"},
		Resources: container.Resources{MemoryLimitBytes: 16 << 20}})
	e := waitExit(t, rt, id, 30*time.Second)
	if e.ExitCode != 137 || !e.OOMKilled {
		t.Errorf("exit = %+v, want 137 and OOMKilled", e)
	}
	st, err := rt.Status(context.Background(), id)
	if err != nil || st.State != container.StateExited || st.ExitCode != 137 || !st.OOMKilled {
		t.Errorf("status = %+v, %v; want Exited 137 OOMKilled", st, err)
	}
}

func TestReadOnlyRootFSAndMounts(t *testing.T) {
	rt := newRuntime(t, sharedDaemon(t))
	importBusybox(t, rt)
	host := shortDir(t)
	if err := os.WriteFile(filepath.Join(host, "in.txt"), []byte("from host"), 0o644); err != nil {
		t.Fatal(err)
	}
	id := run(t, rt, sleeper(container.ContainerSpec{
		Security: container.Security{ReadOnlyRootFS: true},
		Mounts: []container.Mount{
			{Type: container.MountTmpfs, Destination: "/scratch"},
			{Source: host, Destination: "/host"},
			{Source: host, Destination: "/host-ro", ReadOnly: true},
		},
	}))
	for _, tc := range []struct {
		cmd      string
		wantZero bool
	}{
		{"touch /newfile", false},
		{"touch /tmp/newfile", false},
		{"touch /scratch/ok", true},
		{"echo hi > /host/out.txt", true},
		{"grep -q 'from host' /host-ro/in.txt", true},
		{"touch /host-ro/nope", false},
	} {
		code, out := execOut(t, rt, id, "sh", "-c", tc.cmd)
		if (code == 0) != tc.wantZero {
			t.Errorf("%q exited %d (%s), want success=%v", tc.cmd, code, strings.TrimSpace(out), tc.wantZero)
		}
	}
	if data, _ := os.ReadFile(filepath.Join(host, "out.txt")); string(data) != "hi\n" {
		t.Errorf("bind mount write: host sees %q", data)
	}
}

func TestUsersAndCapabilities(t *testing.T) {
	rt := newRuntime(t, sharedDaemon(t))
	importBusybox(t, rt)
	u, g, nobody := int64(1000), int64(3000), int64(65534)
	for _, tc := range []struct {
		name string
		sec  container.Security
		cmd  string
		want string
	}{
		{"uid and gid", container.Security{RunAsUser: &u, RunAsGroup: &g}, "id -u; id -g", "1000\n3000\n"},
		{"uid takes passwd group", container.Security{RunAsUser: &nobody}, "id -u; id -g", "65534\n65534\n"},
		{"root by default", container.Security{}, "id -u", "0\n"},
		{"no new privileges by default", container.Security{}, "grep NoNewPrivs /proc/self/status", "NoNewPrivs:\t1\n"},
		{"escalation allowed", container.Security{AllowPrivilegeEscalation: true}, "grep NoNewPrivs /proc/self/status", "NoNewPrivs:\t0\n"},
		// CAP_NET_ADMIN is bit 12, CAP_NET_RAW bit 13.
		{"default caps lack NET_ADMIN", container.Security{}, "grep CapBnd /proc/self/status", "CapBnd:\t00000000a80425fb\n"},
		{"add NET_ADMIN drop NET_RAW", container.Security{CapAdd: []string{"net_admin"}, CapDrop: []string{"CAP_NET_RAW"}}, "grep CapBnd /proc/self/status", "CapBnd:\t00000000a80415fb\n"},
		{"drop ALL add CHOWN", container.Security{CapDrop: []string{"ALL"}, CapAdd: []string{"CHOWN"}}, "grep CapBnd /proc/self/status", "CapBnd:\t0000000000000001\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := run(t, rt, sleeper(container.ContainerSpec{Security: tc.sec}))
			defer rt.RemoveContainer(context.Background(), id)
			if code, out := execOut(t, rt, id, "sh", "-c", tc.cmd); code != 0 || out != tc.want {
				t.Errorf("%q = %d %q, want %q", tc.cmd, code, out, tc.want)
			}
		})
	}
}

func TestRemoveLeavesNothing(t *testing.T) {
	d := sharedDaemon(t)
	rt := newRuntime(t, d)
	importBusybox(t, rt)
	ctx := rt.ns(context.Background())
	id := run(t, rt, sleeper(container.ContainerSpec{Resources: container.Resources{MemoryLimitBytes: 64 << 20, CPUQuota: 50000, CPUShares: 512}}))
	cg := "/" + rt.Namespace() + "/" + id
	if !cgroupExists(cg) {
		t.Fatalf("no cgroup %s while running", cg)
	}
	if data, err := os.ReadFile("/sys/fs/cgroup/cpu" + cg + "/cpu.cfs_quota_us"); err == nil && strings.TrimSpace(string(data)) != "50000" {
		t.Errorf("cpu quota = %s", data)
	}
	runcState := filepath.Join(d.RuntimeConfig().RuncRoot, rt.Namespace(), id)
	if _, err := os.Stat(runcState); err != nil {
		t.Errorf("runc state not under the daemon's dir: %v", err)
	}
	if err := rt.RemoveContainer(context.Background(), id); err != nil {
		t.Fatal(err)
	}
	if _, err := rt.client.ContainerService().Get(ctx, id); !isNotFound(err) {
		t.Errorf("container record: %v", err)
	}
	if p, err := rt.process(ctx, id); p != nil || err != nil {
		t.Errorf("task: %v %v", p, err)
	}
	if _, err := rt.client.SnapshotService("overlayfs").Stat(ctx, id); !isNotFound(err) {
		t.Errorf("snapshot: %v", err)
	}
	for _, root := range cgroupRoots {
		if _, err := os.Stat(filepath.Join(root, cg)); err == nil {
			t.Errorf("cgroup %s left in %s", cg, root)
		}
	}
	if _, err := os.Stat(runcState); err == nil {
		t.Errorf("runc state %s left", runcState)
	}
}

func TestAdoptAfterRestart(t *testing.T) {
	d := sharedDaemon(t)
	rt1 := newRuntime(t, d)
	importBusybox(t, rt1)
	ctx := context.Background()
	id := run(t, rt1, sleeper(container.ContainerSpec{Labels: map[string]string{"uid": "u1"}}))
	st1, _ := rt1.Status(ctx, id)

	// A second instance, as after an agent restart (the first one never
	// closed, as after kill -9).
	rt2 := openRuntime(t, rt1.cfg)
	list, err := rt2.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != id || list[0].State != container.StateRunning || list[0].Pid != st1.Pid || list[0].Labels["uid"] != "u1" || !list[0].StartedAt.Equal(st1.StartedAt) {
		t.Fatalf("list after restart = %+v, want %s running as pid %d", list, id, st1.Pid)
	}
	if code, out := execOut(t, rt2, id, "echo", "adopted"); code != 0 || out != "adopted\n" {
		t.Errorf("exec through the new instance: %d %q", code, out)
	}
	// The adopted container's exit reaches the new instance.
	if err := syscall.Kill(st1.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if e := waitExit(t, rt2, id, 10*time.Second); e.ExitCode != 137 {
		t.Errorf("exit = %+v", e)
	}
}

func TestNetNSPath(t *testing.T) {
	rt := newRuntime(t, sharedDaemon(t))
	importBusybox(t, rt)
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip (iproute2)")
	}
	name := uniqueID("shoal-ct")
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	nsPath := "/run/netns/" + name
	var st syscall.Stat_t
	if err := syscall.Stat(nsPath, &st); err != nil {
		t.Fatal(err)
	}
	id := run(t, rt, sleeper(container.ContainerSpec{NetNSPath: nsPath, Hostname: "pod-a"}))
	if _, out := execOut(t, rt, id, "readlink", "/proc/self/ns/net"); out != fmt.Sprintf("net:[%d]\n", st.Ino) {
		t.Errorf("container netns = %q, want inode %d", out, st.Ino)
	}
	if _, out := execOut(t, rt, id, "hostname"); out != "pod-a\n" {
		t.Errorf("hostname = %q", out)
	}
	// A second container of the "pod" shares it.
	id2 := run(t, rt, sleeper(container.ContainerSpec{NetNSPath: nsPath}))
	_, a := execOut(t, rt, id2, "readlink", "/proc/self/ns/net")
	if a != fmt.Sprintf("net:[%d]\n", st.Ino) {
		t.Errorf("second container netns = %q", a)
	}
}
