package apiserver

import (
	"context"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/node/admission"
	"github.com/shoal-dev/shoal/node/state"
)

const (
	pcPath  = "/apis/scheduling.k8s.io/v1/priorityclasses"
	podPath = "/api/v1/namespaces/default/pods"
)

func pcBody(name string, value int32, globalDefault bool, policy *corev1.PreemptionPolicy) *schedulingv1.PriorityClass {
	return &schedulingv1.PriorityClass{
		TypeMeta:   metav1.TypeMeta{APIVersion: "scheduling.k8s.io/v1", Kind: "PriorityClass"},
		ObjectMeta: metav1.ObjectMeta{Name: name}, Value: value, GlobalDefault: globalDefault, PreemptionPolicy: policy,
	}
}

func prioPod(name, class string, mutate ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.PodSpec{PriorityClassName: class, Containers: []corev1.Container{{Name: "c", Image: "busybox:1"}}},
	}
	for _, m := range mutate {
		m(p)
	}
	return p
}

// forbidden performs r, expects 403 Forbidden and returns the message.
func (e *testEnv) forbidden(r req) string {
	e.t.Helper()
	st := status(e.t, e.ok(r, 403, nil))
	if st.Reason != metav1.StatusReasonForbidden {
		e.t.Fatalf("reason %q, want Forbidden: %+v", st.Reason, st)
	}
	return st.Message
}

// invalid performs r, expects 422 and returns the Status.
func (e *testEnv) invalid(r req) metav1.Status {
	e.t.Helper()
	return status(e.t, e.ok(r, 422, nil))
}

func TestPriorityClassValidation(t *testing.T) {
	e := newEnv(t)
	never := corev1.PreemptNever
	var pc schedulingv1.PriorityClass
	e.ok(req{method: "POST", path: pcPath, body: pcBody("high", 1000, false, nil)}, 201, &pc)
	if pc.PreemptionPolicy == nil || *pc.PreemptionPolicy != corev1.PreemptLowerPriority || pc.Generation != 1 || pc.UID == "" {
		t.Fatalf("created %+v", pc)
	}
	e.ok(req{method: "POST", path: pcPath, body: pcBody("top", 1000000000, false, &never)}, 201, nil)

	for _, tc := range []struct {
		name   string
		body   *schedulingv1.PriorityClass
		fields []string
		msg    string
	}{
		{"above the user maximum", pcBody("huge", 1000000001, false, nil), []string{"value"}, "maximum allowed value of a user defined priority is 1000000000"},
		{"reserved prefix", pcBody("system-mine", 10, false, nil), []string{"metadata.name"}, "system-mine is not a known system priority class"},
		{"built-in with another value", pcBody("system-node-critical", 5, false, nil), []string{"metadata.name"}, "value of system-node-critical PriorityClass must be 2000001000"},
		{"built-in as default", pcBody("system-cluster-critical", 2000000000, true, nil), []string{"metadata.name"}, "globalDefault of system-cluster-critical PriorityClass must be false"},
		{"unknown policy", pcBody("odd", 1, false, ptr(corev1.PreemptionPolicy("Sometimes"))), []string{"preemptionPolicy"}, `Unsupported value: "Sometimes"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := e.invalid(req{method: "POST", path: pcPath, body: tc.body})
			if !slices.Equal(causes(st), tc.fields) || !strings.Contains(st.Message, tc.msg) {
				t.Errorf("fields %v message %q; want %v containing %q", causes(st), st.Message, tc.fields, tc.msg)
			}
		})
	}
	// The built-ins themselves may be created (the controller does).
	e.ok(req{method: "POST", path: pcPath, body: pcBody("system-cluster-critical", 2000000000, false, nil)}, 201, nil)

	// value and preemptionPolicy are immutable; the rest is not.
	upd := pc.DeepCopy()
	upd.Value = 1001
	if st := e.invalid(req{method: "PUT", path: pcPath + "/high", body: upd}); !slices.Equal(causes(st), []string{"value"}) ||
		!strings.Contains(st.Message, "may not be changed in an update") {
		t.Errorf("value change: %v %q", causes(st), st.Message)
	}
	upd = pc.DeepCopy()
	upd.PreemptionPolicy = &never
	if st := e.invalid(req{method: "PUT", path: pcPath + "/high", body: upd}); !slices.Equal(causes(st), []string{"preemptionPolicy"}) ||
		!strings.Contains(st.Message, "field is immutable") {
		t.Errorf("policy change: %v %q", causes(st), st.Message)
	}
	e.ok(req{method: "PATCH", path: pcPath + "/high", ct: "application/merge-patch+json", body: `{"value":5}`}, 422, nil)
	upd = pc.DeepCopy()
	upd.Description = "for the important things"
	upd.PreemptionPolicy = nil // left out: the default is applied again, not a change
	e.ok(req{method: "PUT", path: pcPath + "/high", body: upd}, 200, &pc)
	if pc.Description != "for the important things" || pc.Generation != 1 {
		t.Errorf("after update %+v", pc)
	}
}

func TestPriorityClassGlobalDefaultIsUnique(t *testing.T) {
	e := newEnv(t)
	e.ok(req{method: "POST", path: pcPath, body: pcBody("a", 10, true, nil)}, 201, nil)
	st := e.invalid(req{method: "POST", path: pcPath, body: pcBody("b", 20, true, nil)})
	if !slices.Equal(causes(st), []string{"globalDefault"}) || !strings.Contains(st.Message, "PriorityClass a is already marked as default. Only one default can exist") {
		t.Fatalf("second default: %v %q", causes(st), st.Message)
	}
	// Marking another class default is refused the same way.
	var c schedulingv1.PriorityClass
	e.ok(req{method: "POST", path: pcPath, body: pcBody("c", 30, false, nil)}, 201, &c)
	e.ok(req{method: "PATCH", path: pcPath + "/c", ct: "application/merge-patch+json", body: `{"globalDefault":true}`}, 422, nil)
	// The default itself may be updated, and once it is no longer the
	// default another class may be.
	e.ok(req{method: "PATCH", path: pcPath + "/a", ct: "application/merge-patch+json", body: `{"description":"x"}`}, 200, nil)
	e.ok(req{method: "PATCH", path: pcPath + "/a", ct: "application/merge-patch+json", body: `{"globalDefault":false}`}, 200, nil)
	e.ok(req{method: "PATCH", path: pcPath + "/c", ct: "application/merge-patch+json", body: `{"globalDefault":true}`}, 200, nil)
	e.ok(req{method: "POST", path: pcPath, body: pcBody("b", 20, true, nil)}, 422, nil)
}

// racingProposer writes a default PriorityClass of its own just before
// the first PriorityClass create it forwards: the create's validation saw
// no default, the store refuses the second one.
type racingProposer struct {
	inner state.Proposer
	raced atomic.Bool
}

func (p *racingProposer) Propose(ctx context.Context, ops ...state.Op) ([]state.Result, error) {
	if ops[0].Resource == "priorityclasses.scheduling.k8s.io" && p.raced.CompareAndSwap(false, true) {
		racer := pcBody("racer", 1, true, nil)
		racer.UID = "racer-uid"
		if _, err := p.inner.Propose(ctx, state.Create(racer)); err != nil {
			return nil, err
		}
	}
	return p.inner.Propose(ctx, ops...)
}

func TestPriorityClassGlobalDefaultRace(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Proposer = &racingProposer{inner: c.Proposer} })
	st := e.invalid(req{method: "POST", path: pcPath, body: pcBody("late", 5, true, nil)})
	if !slices.Equal(causes(st), []string{"globalDefault"}) || !strings.Contains(st.Message, "PriorityClass racer is already marked as default") {
		t.Fatalf("raced create: %v %q", causes(st), st.Message)
	}
	if _, ok := e.store.Get("priorityclasses.scheduling.k8s.io", "", "late"); ok {
		t.Fatal("the second default was stored")
	}
}

func TestPodPriorityAdmission(t *testing.T) {
	e := newEnv(t)
	never := corev1.PreemptNever
	e.ok(req{method: "POST", path: pcPath, body: pcBody("high", 1000, false, &never)}, 201, nil)

	if msg := e.forbidden(req{method: "POST", path: podPath, body: prioPod("p0", "gold")}); msg != `pods "p0" is forbidden: no PriorityClass with name gold was found` {
		t.Errorf("unknown class: %q", msg)
	}
	if _, ok := e.store.Get("pods", "default", "p0"); ok {
		t.Error("a refused pod was stored")
	}

	var p corev1.Pod
	e.ok(req{method: "POST", path: podPath, body: prioPod("p1", "high")}, 201, &p)
	if p.Spec.Priority == nil || *p.Spec.Priority != 1000 || p.Spec.PreemptionPolicy == nil || *p.Spec.PreemptionPolicy != never {
		t.Errorf("class high: priority %v policy %v", p.Spec.Priority, p.Spec.PreemptionPolicy)
	}
	stored, _ := e.store.Get("pods", "default", "p1")
	if sp := stored.(*corev1.Pod).Spec.Priority; sp == nil || *sp != 1000 {
		t.Errorf("stored priority %v", sp)
	}

	// No class, no default: 0 and PreemptLowerPriority.
	e.ok(req{method: "POST", path: podPath, body: prioPod("p2", "")}, 201, &p)
	if p.Spec.PriorityClassName != "" || *p.Spec.Priority != 0 || *p.Spec.PreemptionPolicy != corev1.PreemptLowerPriority {
		t.Errorf("no class: %q %v %v", p.Spec.PriorityClassName, *p.Spec.Priority, *p.Spec.PreemptionPolicy)
	}

	// A priority the pod sets itself must be the computed one.
	msg := e.forbidden(req{method: "POST", path: podPath, body: prioPod("p3", "high", func(p *corev1.Pod) { p.Spec.Priority = ptr(int32(7)) })})
	if msg != `pods "p3" is forbidden: the integer value of priority (7) must not be provided in pod spec; priority admission controller computed 1000 from the given PriorityClass name` {
		t.Errorf("own priority: %q", msg)
	}
	e.ok(req{method: "POST", path: podPath, body: prioPod("p4", "high", func(p *corev1.Pod) { p.Spec.Priority = ptr(int32(1000)) })}, 201, nil)
	msg = e.forbidden(req{method: "POST", path: podPath, body: prioPod("p5", "high", func(p *corev1.Pod) {
		p.Spec.PreemptionPolicy = ptr(corev1.PreemptLowerPriority)
	})})
	if !strings.Contains(msg, "the string value of PreemptionPolicy (PreemptLowerPriority) must not be provided in pod spec; priority admission controller computed Never") {
		t.Errorf("own policy: %q", msg)
	}

	// A globalDefault class applies to pods that name none.
	e.ok(req{method: "POST", path: pcPath, body: pcBody("standard", 50, true, nil)}, 201, nil)
	e.ok(req{method: "POST", path: podPath, body: prioPod("p6", "")}, 201, &p)
	if p.Spec.PriorityClassName != "standard" || *p.Spec.Priority != 50 || *p.Spec.PreemptionPolicy != corev1.PreemptLowerPriority {
		t.Errorf("default class: %q %v %v", p.Spec.PriorityClassName, *p.Spec.Priority, *p.Spec.PreemptionPolicy)
	}

	// Dry run and generated names are admitted alike.
	e.ok(req{method: "POST", path: podPath + "?dryRun=All", body: prioPod("p7", "high")}, 201, &p)
	if *p.Spec.Priority != 1000 {
		t.Errorf("dry run priority %v", *p.Spec.Priority)
	}
	gen := prioPod("", "gold")
	gen.GenerateName = "web-"
	if msg := e.forbidden(req{method: "POST", path: podPath, body: gen}); !strings.HasPrefix(msg, `pods "web-`) || !strings.HasSuffix(msg, "no PriorityClass with name gold was found") {
		t.Errorf("generated name: %q", msg)
	}

	// Templates are not admitted: a Deployment may name a class that does
	// not exist yet (its pods are refused until it does, as in Kubernetes).
	e.ok(req{method: "POST", path: "/apis/apps/v1/namespaces/default/deployments", body: map[string]any{
		"metadata": map[string]any{"name": "d"},
		"spec": map[string]any{"selector": map[string]any{"matchLabels": map[string]string{"a": "b"}},
			"template": map[string]any{"metadata": map[string]any{"labels": map[string]string{"a": "b"}},
				"spec": map[string]any{"priorityClassName": "gold", "containers": []map[string]string{{"name": "c", "image": "i:1"}}}}},
	}}, 201, nil)
}

func TestPodUpdateKeepsPriority(t *testing.T) {
	e := newEnv(t)
	e.ok(req{method: "POST", path: pcPath, body: pcBody("high", 1000, false, nil)}, 201, nil)
	e.ok(req{method: "POST", path: pcPath, body: pcBody("low", 1, false, nil)}, 201, nil)
	var p corev1.Pod
	e.ok(req{method: "POST", path: podPath, body: prioPod("p", "high")}, 201, &p)

	// An update that leaves priority and policy out keeps them.
	upd := p.DeepCopy()
	upd.Spec.Priority, upd.Spec.PreemptionPolicy = nil, nil
	upd.Spec.Containers[0].Image = "busybox:2"
	e.ok(req{method: "PUT", path: podPath + "/p", body: upd}, 200, &p)
	if p.Spec.Priority == nil || *p.Spec.Priority != 1000 || p.Spec.PreemptionPolicy == nil || p.Spec.Containers[0].Image != "busybox:2" {
		t.Fatalf("after update: priority %v policy %v image %s", p.Spec.Priority, p.Spec.PreemptionPolicy, p.Spec.Containers[0].Image)
	}
	// Changing them, or the class, is refused.
	for name, mutate := range map[string]func(*corev1.Pod){
		"priority": func(p *corev1.Pod) { p.Spec.Priority = ptr(int32(1)) },
		"class":    func(p *corev1.Pod) { p.Spec.PriorityClassName = "low" },
		"policy":   func(p *corev1.Pod) { p.Spec.PreemptionPolicy = ptr(corev1.PreemptNever) },
	} {
		upd := p.DeepCopy()
		mutate(upd)
		if st := e.invalid(req{method: "PUT", path: podPath + "/p", body: upd}); !slices.Equal(causes(st), []string{"spec"}) {
			t.Errorf("%s change: %v %q", name, causes(st), st.Message)
		}
	}
	e.ok(req{method: "PATCH", path: podPath + "/p", ct: "application/merge-patch+json", body: `{"spec":{"priority":3}}`}, 422, nil)
	e.ok(req{method: "PATCH", path: podPath + "/p", ct: "application/merge-patch+json", body: `{"spec":{"priority":null}}`}, 200, &p)
	if *p.Spec.Priority != 1000 {
		t.Errorf("patch removing priority left %v", *p.Spec.Priority)
	}
}

// TestPodPriorityCatchesUp: a class this replica has not seen yet is
// looked for again after a consistent read (it may have been created
// through another node a moment ago); a class it has is used at once.
func TestPodPriorityCatchesUp(t *testing.T) {
	var reads atomic.Int64
	var e *testEnv
	e = newEnv(t, func(c *Config) {
		c.ConsistentRead = func(ctx context.Context) error {
			if reads.Add(1) == 1 { // the replica catches up: the class arrives
				pc := pcBody("fresh", 77, false, ptr(corev1.PreemptLowerPriority))
				pc.UID = "fresh-uid"
				if _, err := e.prop.Propose(ctx, state.Create(pc)); err != nil {
					return err
				}
			}
			return nil
		}
	})
	var p corev1.Pod
	e.ok(req{method: "POST", path: podPath, body: prioPod("p", "fresh")}, 201, &p)
	if *p.Spec.Priority != 77 || reads.Load() != 1 {
		t.Fatalf("priority %v after %d consistent reads", *p.Spec.Priority, reads.Load())
	}
	e.ok(req{method: "POST", path: podPath, body: prioPod("q", "fresh")}, 201, nil)
	if reads.Load() != 1 {
		t.Errorf("%d consistent reads for a class the replica has, want none", reads.Load()-1)
	}
	e.forbidden(req{method: "POST", path: podPath, body: prioPod("r", "never-made")})
	if reads.Load() != 2 {
		t.Errorf("a missing class did not trigger a consistent read")
	}
}

func TestPodSpecPriorityFieldsValidated(t *testing.T) {
	e := newEnv(t)
	st := e.invalid(req{method: "POST", path: "/apis/apps/v1/namespaces/default/deployments", body: map[string]any{
		"metadata": map[string]any{"name": "d"},
		"spec": map[string]any{"selector": map[string]any{"matchLabels": map[string]string{"a": "b"}},
			"template": map[string]any{"metadata": map[string]any{"labels": map[string]string{"a": "b"}},
				"spec": map[string]any{"priorityClassName": "Not_A_Name", "preemptionPolicy": "Sometimes",
					"containers": []map[string]string{{"name": "c", "image": "i:1"}}}}},
	}})
	if want := []string{"spec.template.spec.priorityClassName", "spec.template.spec.preemptionPolicy"}; !slices.Equal(causes(st), want) {
		t.Errorf("fields %v, want %v", causes(st), want)
	}
}

// TestSystemPriorityClassNotDeletable: the built-ins cannot be deleted; a
// user's class can.
func TestSystemPriorityClassNotDeletable(t *testing.T) {
	e := newEnv(t)
	for _, pc := range admission.SystemPriorityClasses() {
		if _, err := e.prop.Propose(context.Background(), state.Create(pc)); err != nil {
			t.Fatal(err)
		}
	}
	if msg := e.forbidden(req{method: "DELETE", path: pcPath + "/system-node-critical"}); !strings.Contains(msg, "system priority class") {
		t.Fatalf("deleting a built-in: %s", msg)
	}
	e.ok(req{method: "POST", path: pcPath, body: pcBody("batch", 10, false, nil)}, 201, nil)
	e.ok(req{method: "DELETE", path: pcPath + "/batch"}, 200, nil)
}
