package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/shoal-dev/shoal/node/container"
	"github.com/shoal-dev/shoal/node/container/containertest"
	"github.com/shoal-dev/shoal/node/podnet"
	"github.com/shoal-dev/shoal/node/state"
	"github.com/shoal-dev/shoal/node/state/statetest"
)

// The agent under test runs on node testNode at testHostIP; pods are in
// testNamespace.
const (
	testNode      = "node-a"
	testHostIP    = "192.0.2.10"
	testNamespace = "default"
	waitTimeout   = 5 * time.Second
)

// fakeNetwork is an agent.Network that programs nothing. Like podnet, Setup
// is idempotent per pod and keeps the pod's address until Teardown or GC.
type fakeNetwork struct {
	mu        sync.Mutex
	next      int                      // guarded by mu: last address handed out
	pods      map[string]podnet.PodNet // guarded by mu: by pod ID
	setups    []string                 // guarded by mu: pod IDs, in call order
	teardowns []string                 // guarded by mu: pod IDs, in call order
	gcs       []map[string]bool        // guarded by mu: the keep sets, in call order
	peers     [][]podnet.Peer          // guarded by mu: SetPeers arguments, in call order
	// duringGC, when set, is called once by the next GC whose context
	// carries gcHookKey, after it began and before it collects, without the
	// lock.
	duringGC func()
}

// gcHookKey marks the context of a GC that runs fakeNetwork.duringGC.
type gcHookKey struct{}

var _ Network = (*fakeNetwork)(nil)

func newFakeNetwork() *fakeNetwork { return &fakeNetwork{pods: map[string]podnet.PodNet{}} }

func (n *fakeNetwork) Setup(ctx context.Context, podID, netnsPath string) (podnet.PodNet, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.setups = append(n.setups, podID)
	if pn, ok := n.pods[podID]; ok {
		return pn, nil
	}
	n.next++
	pn := podnet.PodNet{
		IP:        net.IPv4(10, 42, 0, byte(1+n.next)),
		Gateway:   net.IPv4(10, 42, 0, 1),
		NetNSPath: "/run/netns/fake-" + podID,
		HostVeth:  fmt.Sprintf("veth%d", n.next),
	}
	n.pods[podID] = pn
	return pn, nil
}

func (n *fakeNetwork) Teardown(ctx context.Context, podID string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.teardowns = append(n.teardowns, podID)
	delete(n.pods, podID)
	return nil
}

// GC collects like podnet's: the pods not in keep, except those whose
// Setup started after GC began.
func (n *fakeNetwork) GC(ctx context.Context, keep map[string]bool) error {
	n.mu.Lock()
	n.gcs = append(n.gcs, maps.Clone(keep))
	var victims []string
	for id := range n.pods {
		if !keep[id] {
			victims = append(victims, id)
		}
	}
	hook := n.duringGC
	if ctx.Value(gcHookKey{}) == nil {
		hook = nil // not the GC the test is about
	}
	if hook != nil {
		n.duringGC = nil
	}
	n.mu.Unlock()
	if hook != nil {
		hook()
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, id := range victims {
		delete(n.pods, id)
	}
	return nil
}

func (n *fakeNetwork) setDuringGC(f func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.duringGC = f
}

// has reports whether the pod has a network.
func (n *fakeNetwork) has(podID string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, ok := n.pods[podID]
	return ok
}

func (n *fakeNetwork) SetPeers(ctx context.Context, peers []podnet.Peer) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.peers = append(n.peers, slices.Clone(peers))
	return nil
}

func (n *fakeNetwork) tornDown(podID string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Contains(n.teardowns, podID)
}

func (n *fakeNetwork) gcCalls() []map[string]bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.gcs)
}

func (n *fakeNetwork) peerCalls() [][]podnet.Peer {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.peers)
}

// syncBuffer is a bytes.Buffer for a logger shared by goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// harness is one node: a replica with a local proposer, a fake runtime
// holding the image "busybox", a fake network and a data directory. Agents
// started with start share them, as agents restarted on one node do.
type harness struct {
	t     *testing.T
	rt    *containertest.Fake
	store *state.Store
	prop  *state.LocalProposer
	net   *fakeNetwork
	dir   string
	logs  *syncBuffer

	mu      sync.Mutex
	history map[string][]*corev1.Pod // guarded by mu: every version of every pod, by name
	cgroups []string                 // guarded by mu: the cgroups RemoveCgroup was asked to remove
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	store := state.NewStore(0)
	h := &harness{
		t:       t,
		rt:      containertest.New(),
		store:   store,
		prop:    state.NewLocalProposer(state.NewFSM(store, statetest.Sealer{})),
		net:     newFakeNetwork(),
		dir:     t.TempDir(),
		logs:    &syncBuffer{},
		history: map[string][]*corev1.Pod{},
	}
	// Cleanups run last-registered first: agents stop before the runtime
	// closes and the data directory goes.
	t.Cleanup(h.rt.Close)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("agent log:\n%s", h.logs)
		}
	})
	if _, err := h.rt.AddImage("busybox", container.ImageConfig{Cmd: []string{"sh"}}); err != nil {
		t.Fatal(err)
	}
	// Record every version of every pod, so that tests can check states
	// the agent went through, however briefly.
	w, err := store.Watch(state.WatchOptions{Resource: "pods"})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.Events() {
			p := ev.Object.(*corev1.Pod)
			h.mu.Lock()
			h.history[p.Name] = append(h.history[p.Name], p)
			h.mu.Unlock()
		}
	}()
	t.Cleanup(func() { w.Stop(); <-done })
	return h
}

// config is the agent configuration of the tests: short back-offs and
// resyncs.
func (h *harness) config() Config {
	return Config{
		NodeName:    testNode,
		HostIP:      testHostIP,
		Store:       h.store,
		Proposer:    h.prop,
		Runtime:     h.rt,
		Network:     h.net,
		DataDir:     h.dir,
		BackoffBase: 50 * time.Millisecond,
		BackoffMax:  400 * time.Millisecond,
		Resync:      200 * time.Millisecond,
		RemoveCgroup: func(path string) error {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.cgroups = append(h.cgroups, path)
			return nil
		},
		Log: slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

// start runs an agent until stop is called or the test ends.
func (h *harness) start(cfg Config) (a *Agent, stop func()) {
	h.t.Helper()
	a, err := New(cfg)
	if err != nil {
		h.t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					h.t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				h.t.Errorf("Run did not return after its context ended")
			}
		})
	}
	h.t.Cleanup(stop)
	return a, stop
}

func (h *harness) create(obj state.Object) {
	h.t.Helper()
	if _, err := h.prop.Propose(context.Background(), state.Create(obj)); err != nil {
		h.t.Fatalf("creating %s/%s: %v", obj.GetNamespace(), obj.GetName(), err)
	}
}

// pod returns the stored pod called name, or nil.
func (h *harness) pod(name string) *corev1.Pod {
	o, ok := h.store.Get("pods", testNamespace, name)
	if !ok {
		return nil
	}
	return o.(*corev1.Pod)
}

// updatePod applies mutate to the stored pod, retrying when the agent
// wrote in between.
func (h *harness) updatePod(name string, mutate func(*corev1.Pod)) {
	h.t.Helper()
	for {
		cur := h.pod(name)
		if cur == nil {
			h.t.Fatalf("pod %s not found", name)
		}
		p := cur.DeepCopy()
		mutate(p)
		_, err := h.prop.Propose(context.Background(), state.Update(p, rvOf(cur)))
		if state.IsCode(err, state.CodeConflict) {
			continue
		}
		if err != nil {
			h.t.Fatalf("updating pod %s: %v", name, err)
		}
		return
	}
}

func (h *harness) deletePod(name string) {
	h.t.Helper()
	if _, err := h.prop.Propose(context.Background(), state.Delete(podKind, testNamespace, name, 0, "")); err != nil {
		h.t.Fatalf("deleting pod %s: %v", name, err)
	}
}

// waitFor polls cond until it holds; what describes it for the failure.
func (h *harness) waitFor(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitPod waits until the stored pod called name satisfies pred and
// returns it.
func (h *harness) waitPod(name, what string, pred func(*corev1.Pod) bool) *corev1.Pod {
	h.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		p := h.pod(name)
		if p != nil && pred(p) {
			return p
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for pod %s: %s; it is now:\n%s", name, what, dumpPod(p))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitSeen waits until some version the pod called name went through
// satisfied pred, and returns that version.
func (h *harness) waitSeen(name, what string, pred func(*corev1.Pod) bool) *corev1.Pod {
	h.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		h.mu.Lock()
		versions := slices.Clone(h.history[name])
		h.mu.Unlock()
		for _, p := range versions {
			if pred(p) {
				return p
			}
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for pod %s to go through: %s; it is now:\n%s", name, what, dumpPod(h.pod(name)))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// phases lists the distinct phases the pod called name went through, in
// order, up to its stored version.
func (h *harness) phases(name string) []corev1.PodPhase {
	h.t.Helper()
	cur := h.pod(name)
	if cur == nil {
		h.t.Fatalf("pod %s not found", name)
	}
	h.waitFor("the recorder to catch up with pod "+name, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		v := h.history[name]
		return len(v) > 0 && rvOf(v[len(v)-1]) >= rvOf(cur)
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []corev1.PodPhase
	for _, p := range h.history[name] {
		if ph := p.Status.Phase; ph != "" && (len(out) == 0 || out[len(out)-1] != ph) {
			out = append(out, ph)
		}
	}
	return out
}

// cgroupRemoved reports whether RemoveCgroup was called for the pod with uid.
func (h *harness) cgroupRemoved(uid types.UID) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Contains(h.cgroups, podCgroup(uid))
}

// podContainers returns the runtime's containers of the pod with uid.
func (h *harness) podContainers(uid types.UID) []container.ContainerStatus {
	h.t.Helper()
	cs, err := h.rt.List(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	return slices.DeleteFunc(cs, func(c container.ContainerStatus) bool { return c.Labels[labelPodUID] != string(uid) })
}

// callsSince returns the runtime calls made after the first n.
func (h *harness) callsSince(n int) []containertest.Call { return h.rt.Calls()[n:] }

func (h *harness) exit(id string, code int, oom bool) {
	h.t.Helper()
	if err := h.rt.Exit(id, code, oom); err != nil {
		h.t.Fatalf("exiting %s: %v", id, err)
	}
}

func dumpPod(p *corev1.Pod) string {
	if p == nil {
		return "(absent)"
	}
	b, _ := json.MarshalIndent(p.Status, "", "  ")
	return fmt.Sprintf("deletionTimestamp=%v status=%s", p.DeletionTimestamp, b)
}

func meta(name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: testNamespace, Name: name, UID: types.UID(uuid.NewString()), CreationTimestamp: metav1.Now()}
}

// newPod returns a pod bound to testNode running ctrs, restartPolicy Always.
func newPod(name string, ctrs ...corev1.Container) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: meta(name),
		Spec: corev1.PodSpec{
			NodeName:                      testNode,
			RestartPolicy:                 corev1.RestartPolicyAlways,
			TerminationGracePeriodSeconds: new(int64(30)),
			Containers:                    ctrs,
		},
	}
}

func ctr(name string) corev1.Container { return corev1.Container{Name: name, Image: "busybox"} }

// status returns the status of the container or init container called
// name, or nil.
func status(p *corev1.Pod, name string) *corev1.ContainerStatus {
	for _, l := range [][]corev1.ContainerStatus{p.Status.ContainerStatuses, p.Status.InitContainerStatuses} {
		for i := range l {
			if l[i].Name == name {
				return &l[i]
			}
		}
	}
	return nil
}

// runtimeID is the runtime's ID of the container a status reports.
func runtimeID(cs *corev1.ContainerStatus) string {
	return strings.TrimPrefix(cs.ContainerID, "containerd://")
}

// running reports whether container name runs its run number restarts.
func running(name string, restarts int32) func(*corev1.Pod) bool {
	return func(p *corev1.Pod) bool {
		cs := status(p, name)
		return cs != nil && cs.State.Running != nil && cs.RestartCount == restarts
	}
}

// waiting reports whether container name waits for reason.
func waiting(name, reason string) func(*corev1.Pod) bool {
	return func(p *corev1.Pod) bool {
		cs := status(p, name)
		return cs != nil && cs.State.Waiting != nil && cs.State.Waiting.Reason == reason
	}
}

func hasPhase(ph corev1.PodPhase) func(*corev1.Pod) bool {
	return func(p *corev1.Pod) bool { return p.Status.Phase == ph }
}

func condition(p *corev1.Pod, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == t {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}

func isReady(want bool) func(*corev1.Pod) bool {
	return func(p *corev1.Pod) bool {
		c := condition(p, corev1.PodReady)
		return c != nil && (c.Status == corev1.ConditionTrue) == want
	}
}

func all(preds ...func(*corev1.Pod) bool) func(*corev1.Pod) bool {
	return func(p *corev1.Pod) bool {
		for _, pred := range preds {
			if !pred(p) {
				return false
			}
		}
		return true
	}
}

// isNotFound reports whether err is the runtime's ErrNotFound.
func isNotFound(err error) bool { return errors.Is(err, container.ErrNotFound) }
