package admission

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/shoal-dev/shoal/node/state"
	"github.com/shoal-dev/shoal/node/state/statetest"
)

func ptr[T any](v T) *T { return &v }

func class(name string, value int32, globalDefault bool, policy corev1.PreemptionPolicy) *schedulingv1.PriorityClass {
	return &schedulingv1.PriorityClass{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name)},
		Value:      value, GlobalDefault: globalDefault, PreemptionPolicy: &policy,
	}
}

// newStore returns a replica holding classes, written through the FSM.
func newStore(t testing.TB, classes ...*schedulingv1.PriorityClass) *state.Store {
	t.Helper()
	store := state.NewStore(0)
	p := state.NewLocalProposer(state.NewFSM(store, statetest.Sealer{}))
	for _, c := range classes {
		if _, err := p.Propose(context.Background(), state.Create(c)); err != nil {
			t.Fatalf("creating class %s: %v", c.Name, err)
		}
	}
	return store
}

func pod(class string, mutate ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "default"}, Spec: corev1.PodSpec{PriorityClassName: class}}
	for _, m := range mutate {
		m(p)
	}
	return p
}

func TestPodPriority(t *testing.T) {
	high := class("high", 1000, false, corev1.PreemptNever)
	low := class("low", -10, false, corev1.PreemptLowerPriority)
	dflt := class("standard", 50, true, corev1.PreemptNever)
	tests := []struct {
		name       string
		classes    []*schedulingv1.PriorityClass
		pod        *corev1.Pod
		wantClass  string
		wantPrio   int32
		wantPolicy corev1.PreemptionPolicy
		wantErr    string
	}{
		{name: "named class", classes: []*schedulingv1.PriorityClass{high, low}, pod: pod("high"),
			wantClass: "high", wantPrio: 1000, wantPolicy: corev1.PreemptNever},
		{name: "negative value", classes: []*schedulingv1.PriorityClass{high, low}, pod: pod("low"),
			wantClass: "low", wantPrio: -10, wantPolicy: corev1.PreemptLowerPriority},
		{name: "no class, no default", classes: []*schedulingv1.PriorityClass{high}, pod: pod(""),
			wantClass: "", wantPrio: 0, wantPolicy: corev1.PreemptLowerPriority},
		{name: "no class, a default", classes: []*schedulingv1.PriorityClass{high, dflt}, pod: pod(""),
			wantClass: "standard", wantPrio: 50, wantPolicy: corev1.PreemptNever},
		{name: "a named class wins over the default", classes: []*schedulingv1.PriorityClass{low, dflt}, pod: pod("low"),
			wantClass: "low", wantPrio: -10, wantPolicy: corev1.PreemptLowerPriority},
		{name: "own priority equal to the computed one", classes: []*schedulingv1.PriorityClass{high},
			pod: pod("high", func(p *corev1.Pod) {
				p.Spec.Priority = ptr(int32(1000))
				p.Spec.PreemptionPolicy = ptr(corev1.PreemptNever)
			}),
			wantClass: "high", wantPrio: 1000, wantPolicy: corev1.PreemptNever},
		{name: "missing class", classes: []*schedulingv1.PriorityClass{high}, pod: pod("gold"),
			wantErr: `pods "p" is forbidden: no PriorityClass with name gold was found`},
		{name: "own priority differs", classes: []*schedulingv1.PriorityClass{high},
			pod:     pod("high", func(p *corev1.Pod) { p.Spec.Priority = ptr(int32(5)) }),
			wantErr: `pods "p" is forbidden: the integer value of priority (5) must not be provided in pod spec; priority admission controller computed 1000 from the given PriorityClass name`},
		{name: "own priority without any class", pod: pod("", func(p *corev1.Pod) { p.Spec.Priority = ptr(int32(5)) }),
			wantErr: "computed 0 from the given PriorityClass name"},
		{name: "own policy differs", classes: []*schedulingv1.PriorityClass{high},
			pod:     pod("high", func(p *corev1.Pod) { p.Spec.PreemptionPolicy = ptr(corev1.PreemptLowerPriority) }),
			wantErr: `pods "p" is forbidden: the string value of PreemptionPolicy (PreemptLowerPriority) must not be provided in pod spec; priority admission controller computed Never from the given PriorityClass name`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			store := newStore(t, tc.classes...)
			p := tc.pod.DeepCopy()
			err := PodPriority(store, p)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				if !apierrors.IsForbidden(err) || !IsRefused(err) {
					t.Errorf("err %T is not a Forbidden refusal", err)
				}
				if !equality.Semantic.DeepEqual(p, tc.pod) {
					t.Errorf("a refused pod was changed: %+v", p.Spec)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Spec.PriorityClassName != tc.wantClass || p.Spec.Priority == nil || *p.Spec.Priority != tc.wantPrio ||
				p.Spec.PreemptionPolicy == nil || *p.Spec.PreemptionPolicy != tc.wantPolicy {
				t.Fatalf("class %q priority %v policy %v; want %q %d %s", p.Spec.PriorityClassName, p.Spec.Priority, p.Spec.PreemptionPolicy,
					tc.wantClass, tc.wantPrio, tc.wantPolicy)
			}
			again := p.DeepCopy()
			if err := PodPriority(store, again); err != nil || !equality.Semantic.DeepEqual(again, p) {
				t.Errorf("admitting again: %v, %+v", err, again.Spec)
			}
		})
	}
}

// TestDefaultPriorityClass: several defaults (which the store prevents,
// but Kubernetes tolerates after races) resolve to the lowest value.
func TestDefaultPriorityClass(t *testing.T) {
	r := fakeReader{class("b", 10, true, corev1.PreemptNever), class("a", 10, true, corev1.PreemptNever),
		class("c", 5, true, corev1.PreemptNever), class("z", 1, false, corev1.PreemptNever)}
	if d := DefaultPriorityClass(r); d == nil || d.Name != "c" {
		t.Fatalf("default %v, want c", d)
	}
	r = r[:2]
	if d := DefaultPriorityClass(r); d == nil || d.Name != "a" {
		t.Fatalf("tie: default %v, want a", d)
	}
	if d := DefaultPriorityClass(fakeReader{}); d != nil {
		t.Fatalf("no classes: default %v", d)
	}
}

type fakeReader []*schedulingv1.PriorityClass

func (f fakeReader) Get(resource, namespace, name string) (state.Object, bool) {
	for _, c := range f {
		if resource == ResourcePriorityClasses && c.Name == name {
			return c, true
		}
	}
	return nil, false
}

func (f fakeReader) List(resource, namespace string) ([]state.Object, uint64) {
	if resource != ResourcePriorityClasses {
		return nil, 0
	}
	out := make([]state.Object, len(f))
	for i, c := range f {
		out[i] = c
	}
	return out, 1
}

func TestSystemPriorityClasses(t *testing.T) {
	want := map[string]int32{SystemNodeCritical: 2000001000, SystemClusterCritical: 2000000000}
	got := SystemPriorityClasses()
	if len(got) != len(want) {
		t.Fatalf("%d built-in classes", len(got))
	}
	for _, pc := range got {
		if want[pc.Name] != pc.Value || pc.GlobalDefault || pc.Description == "" ||
			pc.PreemptionPolicy == nil || *pc.PreemptionPolicy != corev1.PreemptLowerPriority {
			t.Errorf("built-in %+v", pc)
		}
		if err := IsKnownSystemPriorityClass(pc.Name, pc.Value, false); err != nil {
			t.Errorf("%s: %v", pc.Name, err)
		}
	}
	got[0].Value = 1
	if SystemPriorityClasses()[0].Value == 1 {
		t.Error("SystemPriorityClasses shares its objects")
	}
	for _, tc := range []struct {
		name  string
		value int32
		def   bool
		want  string
	}{
		{SystemNodeCritical, 5, false, "value of system-node-critical PriorityClass must be 2000001000"},
		{SystemClusterCritical, 2000000000, true, "globalDefault of system-cluster-critical PriorityClass must be false"},
		{"system-other", 1, false, "system-other is not a known system priority class"},
	} {
		if err := IsKnownSystemPriorityClass(tc.name, tc.value, tc.def); err == nil || err.Error() != tc.want {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestKeepPodPriority(t *testing.T) {
	old := pod("high", func(p *corev1.Pod) {
		p.Spec.Priority = ptr(int32(1000))
		p.Spec.PreemptionPolicy = ptr(corev1.PreemptNever)
	})
	upd := pod("high")
	KeepPodPriority(upd, old)
	if upd.Spec.Priority == nil || *upd.Spec.Priority != 1000 || *upd.Spec.PreemptionPolicy != corev1.PreemptNever {
		t.Fatalf("left out: %v %v", upd.Spec.Priority, upd.Spec.PreemptionPolicy)
	}
	*upd.Spec.Priority = 3
	if *old.Spec.Priority != 1000 {
		t.Error("KeepPodPriority shares the old pod's pointers")
	}
	changed := pod("high", func(p *corev1.Pod) { p.Spec.Priority = ptr(int32(7)) })
	KeepPodPriority(changed, old)
	if *changed.Spec.Priority != 7 {
		t.Errorf("a changed priority was overwritten (validation must see it): %d", *changed.Spec.Priority)
	}
}
