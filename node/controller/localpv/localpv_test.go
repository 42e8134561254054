package localpv

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/defaults"
	"github.com/shoal-dev/shoal/node/events"
	"github.com/shoal-dev/shoal/node/state"
	"github.com/shoal-dev/shoal/node/state/statetest"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

const ns = "default"

// hookProposer passes proposals to the store's proposer, counting them;
// hook, when set, sees each call first and may handle it.
type hookProposer struct {
	inner state.Proposer
	mu    sync.Mutex
	hook  func(ctx context.Context, ops []state.Op) (handled bool, rs []state.Result, err error) // guarded by mu
	calls [][]state.Op                                                                           // guarded by mu
}

func (p *hookProposer) Propose(ctx context.Context, ops ...state.Op) ([]state.Result, error) {
	p.mu.Lock()
	hook := p.hook
	p.calls = append(p.calls, ops)
	p.mu.Unlock()
	if hook != nil {
		if handled, rs, err := hook(ctx, ops); handled {
			return rs, err
		}
	}
	return p.inner.Propose(ctx, ops...)
}

func (p *hookProposer) setHook(h func(ctx context.Context, ops []state.Op) (bool, []state.Result, error)) {
	p.mu.Lock()
	p.hook = h
	p.mu.Unlock()
}

type harness struct {
	t     *testing.T
	ctx   context.Context
	store *state.Store
	local *state.LocalProposer
	prop  *hookProposer
	clock *clocktesting.FakeClock
	c     controller.Context
	lp    *Controller
	uids  atomic.Int64
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	store := state.NewStore(0)
	local := state.NewLocalProposer(state.NewFSM(store, statetest.Sealer{}))
	h := &harness{t: t, ctx: context.Background(), store: store, local: local, prop: &hookProposer{inner: local},
		clock: clocktesting.NewFakeClock(t0)}
	h.c = controller.Context{
		Store: store, Proposer: h.prop, Clock: h.clock,
		NewUID: func() types.UID { return types.UID(fmt.Sprintf("uid-%d", h.uids.Add(1))) },
	}
	h.newController(DefaultConfig())
	for _, n := range []string{"n1", "n2"} {
		h.propose(state.Create(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n, UID: types.UID("node-" + n),
			Labels: map[string]string{corev1.LabelHostname: n + "-host"}}}))
	}
	return h
}

func (h *harness) newController(cfg Config) {
	h.t.Helper()
	lp, err := New(h.c, cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	h.lp = lp
	h.t.Cleanup(lp.queue.ShutDown)
}

func (h *harness) withEvents() {
	rec := events.New(events.Config{Proposer: h.local, Component: "localpv", Now: h.clock.Now})
	ctx, cancel := context.WithCancel(context.Background())
	h.t.Cleanup(cancel)
	go rec.Run(ctx)
	h.c.Events = rec
	h.newController(DefaultConfig())
}

func (h *harness) propose(ops ...state.Op) {
	h.t.Helper()
	if _, err := h.local.Propose(h.ctx, ops...); err != nil {
		h.t.Fatal(err)
	}
}

// claim is a PersistentVolumeClaim as the API server stores it.
func claim(name, size string, mutate ...func(*corev1.PersistentVolumeClaim)) *corev1.PersistentVolumeClaim {
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID("claim-" + name), Generation: 1, CreationTimestamp: metav1.NewTime(t0)},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}},
		},
	}
	for _, m := range mutate {
		m(pvc)
	}
	defaults.Apply(pvc)
	defaults.ApplyCreate(pvc)
	return pvc
}

// pod is a pod using claims, placed on node ("" = not yet).
func pod(name, node string, created time.Time, claims ...string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID("pod-" + name), CreationTimestamp: metav1.NewTime(created)},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "main", Image: "x"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodPending},
	}
	for i, c := range claims {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: fmt.Sprintf("v%d", i),
			VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: c}}})
	}
	return p
}

func (h *harness) getClaim(name string) (*corev1.PersistentVolumeClaim, bool) {
	o, ok := h.store.Get(resourceClaims, ns, name)
	if !ok {
		return nil, false
	}
	return o.(*corev1.PersistentVolumeClaim), true
}

func (h *harness) mustClaim(name string) *corev1.PersistentVolumeClaim {
	h.t.Helper()
	c, ok := h.getClaim(name)
	if !ok {
		h.t.Fatalf("claim %s not found", name)
	}
	return c
}

func (h *harness) volume(name string) (*corev1.PersistentVolume, bool) {
	o, ok := h.store.Get(resourceVolumes, "", name)
	if !ok {
		return nil, false
	}
	return o.(*corev1.PersistentVolume), true
}

func (h *harness) volumes() []string {
	objs, _ := h.store.List(resourceVolumes, "")
	var out []string
	for _, o := range objs {
		out = append(out, o.GetName())
	}
	return out
}

func (h *harness) syncClaim(name string) {
	h.t.Helper()
	if err := h.lp.Sync(h.ctx, claimKey(ns, name)); err != nil {
		h.t.Fatalf("sync claim %s: %v", name, err)
	}
}

func (h *harness) syncVolume(name string) {
	h.t.Helper()
	if err := h.lp.Sync(h.ctx, volumeKey(name)); err != nil {
		h.t.Fatalf("sync volume %s: %v", name, err)
	}
}

// setPod changes a stored pod as the scheduler or kubelet would.
func (h *harness) setPod(name string, mutate func(p *corev1.Pod)) {
	h.t.Helper()
	o, ok := h.store.Get(controller.ResourcePods, ns, name)
	if !ok {
		h.t.Fatalf("pod %s not found", name)
	}
	p := o.(*corev1.Pod).DeepCopy()
	mutate(p)
	h.propose(state.Update(p, controller.RV(p)))
}

// apiDelete deletes a claim as the API server does: marked while it has
// finalizers, removed at once otherwise.
func (h *harness) apiDelete(name string) {
	h.t.Helper()
	c := h.mustClaim(name)
	if len(c.Finalizers) == 0 {
		k, _ := state.KindFor(resourceClaims)
		h.propose(state.Delete(k, ns, name, controller.RV(c), ""))
		return
	}
	next := c.DeepCopy()
	now := metav1.NewTime(h.clock.Now())
	next.DeletionTimestamp, next.DeletionGracePeriodSeconds = &now, new(int64)
	h.propose(state.Update(next, controller.RV(c)))
}

func (h *harness) eventMessages() []string {
	objs, _ := h.store.List("events", "")
	var out []string
	for _, o := range objs {
		ev := o.(*corev1.Event)
		out = append(out, ev.Reason+": "+ev.Message)
	}
	sort.Strings(out)
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestConfig(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig: %v", err)
	}
	for _, mutate := range []func(*Config){
		func(c *Config) { c.BaseDir = "volumes" },
		func(c *Config) { c.BaseDir = "/var/lib/../volumes" },
		func(c *Config) { c.ReclaimPolicy = corev1.PersistentVolumeReclaimRecycle },
		func(c *Config) { c.ReclaimPolicy = "" },
		func(c *Config) { c.StorageClass = "" },
	} {
		cfg := DefaultConfig()
		mutate(&cfg)
		if _, err := New(controller.Context{}, cfg); err == nil {
			t.Errorf("New accepted %+v", cfg)
		}
	}
}

// TestProvisionAfterPodPlaced: nothing happens until a pod using the
// claim is placed; then the volume is made on that pod's node and the
// claim bound to it, both in one proposal.
func TestProvisionAfterPodPlaced(t *testing.T) {
	h := newHarness(t)
	h.withEvents()
	h.propose(state.Create(claim("data", "5Gi")))
	h.propose(state.Create(pod("db", "", t0, "data")))
	h.syncClaim("data")
	if vs := h.volumes(); len(vs) != 0 {
		t.Fatalf("volumes %v before the pod is placed", vs)
	}
	h.setPod("db", func(p *corev1.Pod) { p.Spec.NodeName = "n2" })
	h.prop.mu.Lock()
	h.prop.calls = nil
	h.prop.mu.Unlock()
	h.syncClaim("data")

	h.prop.mu.Lock()
	calls := h.prop.calls
	h.prop.mu.Unlock()
	if len(calls) != 1 || len(calls[0]) != 2 || calls[0][0].Type != state.OpCreate || calls[0][0].Resource != resourceVolumes ||
		calls[0][1].Type != state.OpUpdate || calls[0][1].Resource != resourceClaims {
		t.Fatalf("proposals %+v, want one with the volume's create and the claim's update", calls)
	}
	pvc := h.mustClaim("data")
	name := "pvc-" + string(pvc.UID)
	pv, ok := h.volume(name)
	if !ok {
		t.Fatalf("no volume %s: %v", name, h.volumes())
	}
	if pv.Spec.Local == nil || pv.Spec.Local.Path != "/var/lib/shoal/volumes/"+name {
		t.Errorf("volume source %+v", pv.Spec.PersistentVolumeSource)
	}
	terms := pv.Spec.NodeAffinity.Required.NodeSelectorTerms
	if len(terms) != 1 || fmt.Sprint(terms[0].MatchExpressions) != fmt.Sprint([]corev1.NodeSelectorRequirement{
		{Key: "kubernetes.io/hostname", Operator: corev1.NodeSelectorOpIn, Values: []string{"n2-host"}}}) {
		t.Errorf("node affinity %+v", terms)
	}
	if q := pv.Spec.Capacity[corev1.ResourceStorage]; q.String() != "5Gi" || !slices.Equal(pv.Spec.AccessModes, pvc.Spec.AccessModes) ||
		pv.Spec.StorageClassName != "local" || pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete ||
		pv.Spec.VolumeMode == nil || *pv.Spec.VolumeMode != corev1.PersistentVolumeFilesystem {
		t.Errorf("volume spec %+v", pv.Spec)
	}
	if r := pv.Spec.ClaimRef; r == nil || r.Namespace != ns || r.Name != "data" || r.UID != pvc.UID || r.Kind != "PersistentVolumeClaim" {
		t.Errorf("claimRef %+v", r)
	}
	if pv.Status.Phase != corev1.VolumeBound || pv.Annotations[annProvisionedBy] != ProvisionerName || pv.UID == "" || pv.CreationTimestamp.IsZero() {
		t.Errorf("volume %+v", pv.ObjectMeta)
	}
	if pvc.Spec.VolumeName != name || pvc.Status.Phase != corev1.ClaimBound || pvc.Status.Capacity.Storage().String() != "5Gi" ||
		!slices.Equal(pvc.Status.AccessModes, pv.Spec.AccessModes) || pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != "local" {
		t.Errorf("claim %+v %+v", pvc.Spec, pvc.Status)
	}
	if !slices.Contains(pvc.Finalizers, ProtectionFinalizer) || pvc.Annotations[annBindCompleted] != "yes" || pvc.Annotations[annSelectedNode] != "n2" {
		t.Errorf("claim metadata %+v", pvc.ObjectMeta)
	}
	// Syncing again changes nothing.
	rv := pvc.ResourceVersion
	h.syncClaim("data")
	h.syncVolume(name)
	if h.mustClaim("data").ResourceVersion != rv || len(h.volumes()) != 1 {
		t.Error("a second sync wrote again")
	}
	waitFor(t, "the event", func() bool {
		return slices.Contains(h.eventMessages(), "ProvisioningSucceeded: Successfully provisioned volume "+name+" on node n2")
	})
}

// TestProvisionIsAtomic: when the claim changes between the read and the
// write, neither the volume nor the binding is stored; the next sync does
// both.
func TestProvisionIsAtomic(t *testing.T) {
	h := newHarness(t)
	h.propose(state.Create(claim("data", "1Gi")))
	h.propose(state.Create(pod("db", "n1", t0, "data")))
	var once sync.Once
	h.prop.setHook(func(ctx context.Context, ops []state.Op) (bool, []state.Result, error) {
		once.Do(func() {
			c, _ := h.getClaim("data")
			next := c.DeepCopy()
			next.Labels = map[string]string{"touched": "yes"}
			h.propose(state.Update(next, controller.RV(c)))
		})
		return false, nil, nil
	})
	if err := h.lp.Sync(h.ctx, claimKey(ns, "data")); err == nil || !state.IsCode(err, state.CodeConflict) {
		t.Fatalf("sync: %v, want a conflict", err)
	}
	if vs := h.volumes(); len(vs) != 0 {
		t.Fatalf("volume %v stored without its binding", vs)
	}
	if c := h.mustClaim("data"); c.Spec.VolumeName != "" || c.Status.Phase != corev1.ClaimPending {
		t.Fatalf("claim bound without its volume: %+v", c.Spec)
	}
	h.prop.setHook(nil)
	h.syncClaim("data")
	if c := h.mustClaim("data"); c.Status.Phase != corev1.ClaimBound || c.Labels["touched"] != "yes" {
		t.Fatalf("claim after retry %+v", c)
	}
	if vs := h.volumes(); len(vs) != 1 {
		t.Fatalf("volumes %v", vs)
	}
}

// TestPlacement: the oldest placed pod decides the node; pods that are
// not placed, finished, being deleted or using other claims do not count;
// ephemeral volumes' claims are found by name.
func TestPlacement(t *testing.T) {
	h := newHarness(t)
	h.propose(state.Create(claim("data", "1Gi")))
	done := pod("done", "n1", t0.Add(-3*time.Hour), "data")
	done.Status.Phase = corev1.PodSucceeded
	dying := pod("dying", "n1", t0.Add(-2*time.Hour), "data")
	now := metav1.NewTime(t0)
	dying.DeletionTimestamp, dying.Finalizers = &now, []string{"x/hold"}
	other := pod("other", "n1", t0.Add(-time.Hour), "elsewhere")
	h.propose(state.Create(done), state.Create(dying), state.Create(other),
		state.Create(pod("unplaced", "", t0.Add(-time.Hour), "data")),
		state.Create(pod("newer", "n1", t0.Add(time.Minute), "data")),
		state.Create(pod("older", "n2", t0, "data")))
	h.syncClaim("data")
	pv, ok := h.volume("pvc-claim-data")
	if !ok {
		t.Fatalf("no volume: %v", h.volumes())
	}
	if v := pv.Spec.NodeAffinity.Required.NodeSelectorTerms[0].MatchExpressions[0].Values; !slices.Equal(v, []string{"n2-host"}) {
		t.Errorf("volume on %v, want n2 (the oldest placed pod's node)", v)
	}

	// Ephemeral volume claims are <pod>-<volume>.
	h.propose(state.Create(claim("eph-scratch", "1Gi")))
	p := pod("eph", "n1", t0)
	p.Spec.Volumes = []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{}}}}
	h.propose(state.Create(p))
	h.syncClaim("eph-scratch")
	if c := h.mustClaim("eph-scratch"); c.Spec.VolumeName == "" {
		t.Error("ephemeral claim not provisioned")
	}
}

// TestExplicitClassAndPolicy: the claim's storage class and reclaim
// policy annotation are followed; an unknown policy is refused.
func TestExplicitClassAndPolicy(t *testing.T) {
	h := newHarness(t)
	h.withEvents()
	h.propose(state.Create(claim("fast", "1Gi", func(c *corev1.PersistentVolumeClaim) {
		class := "nvme"
		c.Spec.StorageClassName = &class
		c.Annotations = map[string]string{ReclaimPolicyAnnotation: "Retain"}
	})))
	h.propose(state.Create(claim("bad", "1Gi", func(c *corev1.PersistentVolumeClaim) {
		c.Annotations = map[string]string{ReclaimPolicyAnnotation: "Recycle"}
	})))
	h.propose(state.Create(pod("p", "n1", t0, "fast", "bad")))
	h.syncClaim("fast")
	h.syncClaim("bad")
	pv, ok := h.volume("pvc-claim-fast")
	if !ok || pv.Spec.StorageClassName != "nvme" || pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimRetain {
		t.Fatalf("volume %+v", pv)
	}
	if c := h.mustClaim("fast"); *c.Spec.StorageClassName != "nvme" {
		t.Errorf("claim class changed to %s", *c.Spec.StorageClassName)
	}
	if _, ok := h.volume("pvc-claim-bad"); ok {
		t.Error("claim with an unknown reclaim policy provisioned")
	}
	waitFor(t, "the warning", func() bool {
		return slices.Contains(h.eventMessages(), `ProvisioningFailed: annotation shoal.dev/reclaim-policy: reclaim policy "Recycle" is not Delete or Retain`)
	})

	// A configured default applies where the claim says nothing.
	cfg := DefaultConfig()
	cfg.ReclaimPolicy, cfg.BaseDir, cfg.StorageClass = corev1.PersistentVolumeReclaimRetain, "/srv/vols", "disk"
	h.newController(cfg)
	h.propose(state.Create(claim("plain", "1Gi")), state.Create(pod("q", "n1", t0, "plain")))
	h.syncClaim("plain")
	pv, _ = h.volume("pvc-claim-plain")
	if pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimRetain || pv.Spec.Local.Path != "/srv/vols/pvc-claim-plain" || pv.Spec.StorageClassName != "disk" {
		t.Errorf("volume with configured defaults %+v", pv.Spec)
	}
}

// TestUnsupportedClaims: claims the provisioner cannot serve stay Pending
// with a warning.
func TestUnsupportedClaims(t *testing.T) {
	h := newHarness(t)
	h.withEvents()
	block := corev1.PersistentVolumeBlock
	h.propose(
		state.Create(claim("sel", "1Gi", func(c *corev1.PersistentVolumeClaim) {
			c.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"disk": "ssd"}}
		})),
		state.Create(claim("blk", "1Gi", func(c *corev1.PersistentVolumeClaim) { c.Spec.VolumeMode = &block })),
		state.Create(claim("src", "1Gi", func(c *corev1.PersistentVolumeClaim) {
			c.Spec.DataSource = &corev1.TypedLocalObjectReference{Kind: "PersistentVolumeClaim", Name: "x"}
		})),
		state.Create(claim("empty", "0")),
		state.Create(pod("p", "n1", t0, "sel", "blk", "src", "empty")),
	)
	for _, n := range []string{"sel", "blk", "src", "empty"} {
		h.syncClaim(n)
		if c := h.mustClaim(n); c.Spec.VolumeName != "" || c.Status.Phase != corev1.ClaimPending {
			t.Errorf("claim %s bound", n)
		}
	}
	if vs := h.volumes(); len(vs) != 0 {
		t.Fatalf("volumes %v", vs)
	}
	waitFor(t, "4 warnings", func() bool {
		n := 0
		for _, m := range h.eventMessages() {
			if strings.HasPrefix(m, reasonProvisioningFailed) {
				n++
			}
		}
		return n == 4
	})
}

// bound makes claim name bound to a volume on n1 used by pod user.
func (h *harness) bound(name, user string, mutate ...func(*corev1.PersistentVolumeClaim)) *corev1.PersistentVolume {
	h.t.Helper()
	h.propose(state.Create(claim(name, "1Gi", mutate...)))
	p := pod(user, "n1", t0, name)
	p.Status.Phase = corev1.PodRunning
	h.propose(state.Create(p))
	h.syncClaim(name)
	pv, ok := h.volume("pvc-claim-" + name)
	if !ok {
		h.t.Fatalf("claim %s not provisioned", name)
	}
	return pv
}

// TestReclaimDelete: a claim in use is only marked when deleted; once its
// pod is gone the claim goes, then its volume (reclaim policy Delete).
func TestReclaimDelete(t *testing.T) {
	h := newHarness(t)
	pv := h.bound("data", "db")
	h.apiDelete("data")
	h.syncClaim("data")
	if c, ok := h.getClaim("data"); !ok || c.DeletionTimestamp == nil {
		t.Fatal("claim in use removed")
	}
	h.syncVolume(pv.Name)
	if _, ok := h.volume(pv.Name); !ok {
		t.Fatal("volume of a claim in use deleted")
	}
	h.setPod("db", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded })
	h.syncClaim("data")
	if _, ok := h.getClaim("data"); ok {
		t.Fatal("claim kept after its last pod finished")
	}
	h.syncVolume(pv.Name)
	if _, ok := h.volume(pv.Name); ok {
		t.Fatal("volume kept after its claim went (Delete)")
	}
}

// TestReclaimRetain: with Retain the volume outlives its claim, Released.
func TestReclaimRetain(t *testing.T) {
	h := newHarness(t)
	pv := h.bound("data", "db", func(c *corev1.PersistentVolumeClaim) {
		c.Annotations = map[string]string{ReclaimPolicyAnnotation: "Retain"}
	})
	k, _ := state.KindFor(controller.ResourcePods)
	h.propose(state.Delete(k, ns, "db", 0, ""))
	h.apiDelete("data")
	h.syncClaim("data")
	h.syncVolume(pv.Name)
	got, ok := h.volume(pv.Name)
	if !ok || got.Status.Phase != corev1.VolumeReleased || got.Spec.ClaimRef == nil {
		t.Fatalf("volume %+v, want Released with its claimRef", got)
	}
	// A new claim of the same name gets a new volume, not the old one.
	h.propose(state.Create(claim("data", "1Gi", func(c *corev1.PersistentVolumeClaim) { c.UID = "claim-data-2" })))
	h.propose(state.Create(pod("db2", "n2", t0, "data")))
	h.syncClaim("data")
	if c := h.mustClaim("data"); c.Spec.VolumeName != "pvc-claim-data-2" {
		t.Errorf("new claim bound to %q", c.Spec.VolumeName)
	}
	h.syncVolume(pv.Name)
	if got, _ := h.volume(pv.Name); got.Status.Phase != corev1.VolumeReleased {
		t.Errorf("old volume %s", got.Status.Phase)
	}
}

// TestReclaimReplacedClaim: a claim deleted and made again under its name
// before the volume was reclaimed: the old volume is reclaimed all the
// same.
func TestReclaimReplacedClaim(t *testing.T) {
	h := newHarness(t)
	pv := h.bound("data", "db")
	k, _ := state.KindFor(controller.ResourcePods)
	h.propose(state.Delete(k, ns, "db", 0, ""))
	h.apiDelete("data")
	h.syncClaim("data")
	h.propose(state.Create(claim("data", "1Gi", func(c *corev1.PersistentVolumeClaim) { c.UID = "claim-data-2" })))
	h.syncVolume(pv.Name)
	if _, ok := h.volume(pv.Name); ok {
		t.Fatal("volume of the replaced claim kept")
	}
}

// TestForeignVolumes: a volume this provisioner did not make is never
// deleted: with Delete it fails with a message.
func TestForeignVolumes(t *testing.T) {
	h := newHarness(t)
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "static", UID: "pv-static"},
		Spec: corev1.PersistentVolumeSpec{
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
			ClaimRef:                      &corev1.ObjectReference{Namespace: ns, Name: "gone", UID: "claim-gone"},
			PersistentVolumeSource:        corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/data"}},
		},
		Status: corev1.PersistentVolumeStatus{Phase: corev1.VolumeBound},
	}
	h.propose(state.Create(pv))
	h.syncVolume("static")
	got, ok := h.volume("static")
	if !ok || got.Status.Phase != corev1.VolumeFailed || !strings.Contains(got.Status.Message, "only the volumes it provisioned") {
		t.Fatalf("foreign volume %+v", got)
	}
}

// TestClaimLost: a bound claim whose volume was deleted is Lost.
func TestClaimLost(t *testing.T) {
	h := newHarness(t)
	pv := h.bound("data", "db")
	k, _ := state.KindFor(resourceVolumes)
	h.propose(state.Delete(k, "", pv.Name, 0, ""))
	h.syncClaim("data")
	if c := h.mustClaim("data"); c.Status.Phase != corev1.ClaimLost {
		t.Fatalf("claim phase %s, want Lost", c.Status.Phase)
	}
}

// TestRun: driven by watches, a claim is provisioned when its pod is
// placed, and its volume reclaimed when claim and pod are deleted.
func TestRun(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.lp.Run(ctx); close(done) }()
	h.propose(state.Create(claim("data", "1Gi")), state.Create(pod("db", "", t0, "data")))
	h.setPod("db", func(p *corev1.Pod) { p.Spec.NodeName = "n1"; p.Status.Phase = corev1.PodRunning })
	waitFor(t, "the binding", func() bool { c, ok := h.getClaim("data"); return ok && c.Status.Phase == corev1.ClaimBound })
	h.apiDelete("data")
	k, _ := state.KindFor(controller.ResourcePods)
	h.propose(state.Delete(k, ns, "db", 0, ""))
	waitFor(t, "the claim and volume to go", func() bool {
		_, c := h.getClaim("data")
		return !c && len(h.volumes()) == 0
	})
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not stop")
	}
}
