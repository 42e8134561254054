package controller

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/shoal-dev/shoal/node/state"
	"github.com/shoal-dev/shoal/node/state/statetest"
)

func newObjectsContext(t *testing.T) (Context, *state.LocalProposer) {
	t.Helper()
	store := state.NewStore(0)
	p := state.NewLocalProposer(state.NewFSM(store, statetest.Sealer{}))
	c := Context{Store: store, Proposer: p, Clock: clocktesting.NewFakeClock(time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC))}.WithDefaults()
	if _, err := p.Propose(context.Background(), state.Create(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}})); err != nil {
		t.Fatal(err)
	}
	return c, p
}

func TestNamesAndNewPodFromTemplate(t *testing.T) {
	if got := NamePrefix("web"); got != "web-" {
		t.Errorf("NamePrefix(web) = %q", got)
	}
	if got := GenerateName(strings.Repeat("a", 70)); len(got) != 63 || !strings.HasPrefix(got, strings.Repeat("a", 58)) {
		t.Errorf("GenerateName of a long prefix = %q (%d)", got, len(got))
	}
	c, _ := newObjectsContext(t)
	owner := &metav1.ObjectMeta{Name: "web", Namespace: "prod", UID: "owner-uid"}
	tmpl := &corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}, Finalizers: []string{"f"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i"}}},
	}
	ref := NewControllerRef(owner, corev1.SchemeGroupVersion.WithKind("ReplicationController"))
	p := NewPodFromTemplate(c, tmpl, owner, ref)
	if p.Namespace != "prod" || p.GenerateName != "web-" || !strings.HasPrefix(p.Name, "web-") || p.UID == "" ||
		p.Generation != 1 || p.Status.Phase != corev1.PodPending || p.CreationTimestamp.Nanosecond() != 0 {
		t.Errorf("pod metadata %+v phase %q", p.ObjectMeta, p.Status.Phase)
	}
	if !IsControlledBy(p, owner) || len(p.Finalizers) != 1 || p.Labels["app"] != "web" {
		t.Errorf("pod %+v", p.ObjectMeta)
	}
	p.Labels["app"] = "changed"
	p.Spec.Containers[0].Image = "changed"
	if tmpl.Labels["app"] != "web" || tmpl.Spec.Containers[0].Image != "i" {
		t.Error("NewPodFromTemplate shares the template's maps or slices")
	}
}

func TestCreatePodRetriesTakenGeneratedName(t *testing.T) {
	c, _ := newObjectsContext(t)
	ctx := context.Background()
	owner := &metav1.ObjectMeta{Name: "web", Namespace: "default", UID: "o"}
	first := NewPodFromTemplate(c, &corev1.PodTemplateSpec{}, owner, nil)
	if err := CreatePod(ctx, c, first); err != nil {
		t.Fatal(err)
	}
	second := NewPodFromTemplate(c, &corev1.PodTemplateSpec{}, owner, nil)
	second.Name = first.Name // force a collision
	if err := CreatePod(ctx, c, second); err != nil {
		t.Fatal(err)
	}
	if second.Name == first.Name || second.ResourceVersion == "" {
		t.Errorf("second pod %q rv %q", second.Name, second.ResourceVersion)
	}
	fixed := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: first.Name, Namespace: "default"}}
	if err := CreatePod(ctx, c, fixed); !state.IsCode(err, state.CodeAlreadyExists) {
		t.Errorf("a fixed name that is taken: %v", err)
	}
}

// TestDeletePod: bound running pods are marked for graceful deletion with
// their grace period; pods never bound, finished, or on a missing node go
// at once; a pod already terminating or gone is success.
func TestDeletePod(t *testing.T) {
	c, p := newObjectsContext(t)
	ctx := context.Background()
	mk := func(name, node string, phase corev1.PodPhase, grace *int64) *corev1.Pod {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("u-" + name)},
			Spec:       corev1.PodSpec{NodeName: node, TerminationGracePeriodSeconds: grace},
			Status:     corev1.PodStatus{Phase: phase},
		}
		if _, err := p.Propose(ctx, state.Create(pod)); err != nil {
			t.Fatal(err)
		}
		o, _ := c.Store.Get("pods", "default", name)
		return o.(*corev1.Pod)
	}
	five := int64(5)
	now := c.Now()
	for _, tc := range []struct {
		pod   *corev1.Pod
		grace int64 // -1: deleted at once
	}{
		{mk("running", "n1", corev1.PodRunning, nil), 30},
		{mk("short", "n1", corev1.PodRunning, &five), 5},
		{mk("unbound", "", corev1.PodPending, nil), -1},
		{mk("finished", "n1", corev1.PodSucceeded, nil), -1},
		{mk("lost", "gone-node", corev1.PodRunning, nil), -1},
	} {
		if err := DeletePod(ctx, c, tc.pod); err != nil {
			t.Fatalf("%s: %v", tc.pod.Name, err)
		}
		o, ok := c.Store.Get("pods", "default", tc.pod.Name)
		if tc.grace < 0 {
			if ok {
				t.Errorf("%s: still stored", tc.pod.Name)
			}
			continue
		}
		got := o.(*corev1.Pod)
		want := now.Add(time.Duration(tc.grace) * time.Second).Truncate(time.Second)
		if got.DeletionTimestamp == nil || !got.DeletionTimestamp.Time.Equal(want) || *got.DeletionGracePeriodSeconds != tc.grace {
			t.Errorf("%s: deletionTimestamp %v grace %v, want %v %d", tc.pod.Name, got.DeletionTimestamp, got.DeletionGracePeriodSeconds, want, tc.grace)
		}
		// Again: already terminating, nothing changes.
		rv := got.ResourceVersion
		if err := DeletePod(ctx, c, tc.pod); err != nil {
			t.Fatal(err)
		}
		if o, _ := c.Store.Get("pods", "default", tc.pod.Name); o.GetResourceVersion() != rv {
			t.Errorf("%s: deleted twice", tc.pod.Name)
		}
	}
	// Gone, or replaced by a pod of the same name: success, untouched.
	gone := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "unbound", Namespace: "default", UID: "u-unbound"}}
	if err := DeletePod(ctx, c, gone); err != nil {
		t.Error(err)
	}
	mk("unbound", "", corev1.PodPending, nil) // stored again, as UID u-unbound
	if err := DeletePod(ctx, c, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "unbound", Namespace: "default", UID: "someone-else"}}); err != nil {
		t.Error(err)
	}
	if _, ok := c.Store.Get("pods", "default", "unbound"); !ok {
		t.Error("a pod with another UID was deleted")
	}
}

func TestModifyRetriesConflicts(t *testing.T) {
	c, p := newObjectsContext(t)
	ctx := context.Background()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cm", Namespace: "default"}, Data: map[string]string{"n": "0"}}
	if _, err := p.Propose(ctx, state.Create(cm)); err != nil {
		t.Fatal(err)
	}
	calls := 0
	out, err := Modify(ctx, c, "configmaps", "default", "cm", func(o state.Object) error {
		calls++
		if calls == 1 { // someone else writes in between
			cur, _ := c.Store.Get("configmaps", "default", "cm")
			other := cur.DeepCopyObject().(*corev1.ConfigMap)
			other.Data = map[string]string{"n": "1", "other": "yes"}
			if _, err := p.Propose(ctx, state.Update(other, RV(cur))); err != nil {
				t.Fatal(err)
			}
		}
		o.(*corev1.ConfigMap).Data["mine"] = "yes"
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	got := out.(*corev1.ConfigMap)
	if calls != 2 || got.Data["other"] != "yes" || got.Data["mine"] != "yes" || got.ResourceVersion == "" {
		t.Errorf("calls %d data %v rv %q", calls, got.Data, got.ResourceVersion)
	}
	if _, err := Modify(ctx, c, "configmaps", "default", "cm", func(state.Object) error { return ErrUnchanged }); err != nil {
		t.Error(err)
	}
	if _, err := Modify(ctx, c, "configmaps", "default", "nope", func(state.Object) error { return nil }); !state.IsCode(err, state.CodeNotFound) {
		t.Errorf("missing object: %v", err)
	}
}

func TestPodAvailability(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	pod := &corev1.Pod{Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(at)}}}}
	for _, c := range []struct {
		min  int32
		now  time.Time
		want time.Duration
	}{
		{0, at, 0}, {10, at, 11 * time.Second}, {10, at.Add(10 * time.Second), time.Second}, {10, at.Add(11 * time.Second), 0},
	} {
		if got := PodAvailableIn(pod, c.min, c.now); got != c.want {
			t.Errorf("PodAvailableIn(min %d, now +%v) = %v, want %v", c.min, c.now.Sub(at), got, c.want)
		}
	}
	if PodAvailableIn(&corev1.Pod{}, 0, at) != -1 || IsPodAvailable(&corev1.Pod{}, 0, at) {
		t.Error("a pod without a Ready condition is available")
	}
	if !IsPodActive(&corev1.Pod{}) || IsPodActive(&corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodFailed}}) {
		t.Error("IsPodActive")
	}
}
