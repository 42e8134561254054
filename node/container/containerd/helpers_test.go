package containerd

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/node/container"
	"github.com/shoal-dev/shoal/node/container/image"
)

// The tests share one private daemon (started on first use, stopped by
// TestMain); each test works in a containerd namespace of its own. Tests
// that need their own daemons start them.
var shared struct {
	once sync.Once
	d    *Daemon
	dir  string
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.d != nil {
		shared.d.Stop(context.Background())
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// requireReal skips unless the test can drive a real containerd.
func requireReal(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: runs a real containerd and runc")
	}
	for _, bin := range []string{"containerd", "runc", "containerd-shim-runc-v2"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("needs %s in PATH (apt-get install containerd runc)", bin)
		}
	}
	if err := image.CheckStaticBusybox(); err != nil {
		t.Skipf("needs a static busybox: %v", err)
	}
}

// shortDir is a fresh directory with a short path (unix socket paths must
// stay under 108 bytes), removed after the test.
func shortDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sct")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// startDaemon starts a private daemon for this test alone.
func startDaemon(t testing.TB) *Daemon {
	t.Helper()
	requireReal(t)
	cfg := DefaultDaemonConfig(shortDir(t))
	cfg.Logf = t.Logf
	d, err := StartDaemon(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Stop(context.Background()) })
	return d
}

func sharedDaemon(t testing.TB) *Daemon {
	t.Helper()
	requireReal(t)
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("", "sct")
		if shared.err != nil {
			return
		}
		shared.d, shared.err = StartDaemon(context.Background(), DefaultDaemonConfig(shared.dir))
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	return shared.d
}

var nonID = regexp.MustCompile(`[^a-z0-9]+`)

// newRuntime opens a Runtime on d in a namespace named after the test and
// removes every container of that namespace afterwards.
func newRuntime(t testing.TB, d *Daemon) *Runtime {
	t.Helper()
	cfg := d.RuntimeConfig()
	ns := strings.Trim(nonID.ReplaceAllString(strings.ToLower(t.Name()), "-"), "-")
	if len(ns) > 40 {
		ns = ns[:40]
	}
	cfg.Namespace = strings.Trim(ns, "-")
	cfg.Logf = t.Logf
	rt := openRuntime(t, cfg)
	t.Cleanup(func() {
		removeAll(t, rt)
		RemoveCgroup("/" + cfg.Namespace) // the namespace's parent cgroup
	})
	return rt
}

func openRuntime(t testing.TB, cfg Config) *Runtime {
	t.Helper()
	rt, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

func removeAll(t testing.TB, rt *Runtime) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	list, err := rt.List(ctx)
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	for _, c := range list {
		if err := rt.RemoveContainer(ctx, c.ID); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	}
}

var (
	busyboxOnce sync.Once
	busyboxTar  []byte
	busyboxRes  image.Result
	busyboxErr  error
)

const busyboxRef = "shoal.test/busybox:1"

// importBusybox builds (once) and imports the busybox test image.
func importBusybox(t testing.TB, rt *Runtime) string {
	t.Helper()
	busyboxOnce.Do(func() {
		var buf bytes.Buffer
		busyboxRes, busyboxErr = image.BusyboxImage(&buf, busyboxRef)
		busyboxTar = buf.Bytes()
	})
	if busyboxErr != nil {
		t.Fatal(busyboxErr)
	}
	if _, err := rt.ImportImage(context.Background(), bytes.NewReader(busyboxTar)); err != nil {
		t.Fatal(err)
	}
	return busyboxRef
}

func uniqueID(prefix string) string {
	var b [4]byte
	rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

// run creates and starts a busybox container running cmd.
func run(t testing.TB, rt *Runtime, spec container.ContainerSpec) string {
	t.Helper()
	ctx := context.Background()
	if spec.ID == "" {
		spec.ID = uniqueID("c")
	}
	if spec.Image == "" {
		spec.Image = busyboxRef
	}
	if err := rt.CreateContainer(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if err := rt.StartContainer(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	return spec.ID
}

// execOut runs cmd in id and returns its exit code and combined output.
func execOut(t testing.TB, rt *Runtime, id string, cmd ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	code, err := rt.Exec(context.Background(), id, container.ExecSpec{Cmd: cmd, Stdout: &out, Stderr: &out})
	if err != nil {
		t.Fatalf("exec %q: %v", cmd, err)
	}
	return code, out.String()
}

// waitExit waits for id's exit on rt.Exits.
func waitExit(t testing.TB, rt *Runtime, id string, timeout time.Duration) container.Exit {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case e, ok := <-rt.Exits():
			if !ok {
				t.Fatal("exits closed")
			}
			if e.ID == id {
				return e
			}
		case <-deadline:
			t.Fatalf("no exit of %s within %v", id, timeout)
		}
	}
}

// eventually polls cond until it holds or timeout passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func fileContains(path, want string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if !strings.Contains(string(data), want) {
		return fmt.Errorf("%s has %q, want %q in it", path, data, want)
	}
	return nil
}

var errStill = errors.New("still there")
