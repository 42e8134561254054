package controller

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/node/state"
)

// TestCreatePodResolvesPriority: a controller's pod gets its priority from
// its class as one created through the API would; a missing class or a
// priority in the template that is not the class's is refused, finally
// (nothing was proposed, so the caller expects no pod).
func TestCreatePodResolvesPriority(t *testing.T) {
	c, p := newObjectsContext(t)
	ctx := context.Background()
	never := corev1.PreemptNever
	for _, pc := range []*schedulingv1.PriorityClass{
		{ObjectMeta: metav1.ObjectMeta{Name: "batch", UID: "pc-1"}, Value: 100, PreemptionPolicy: &never},
		{ObjectMeta: metav1.ObjectMeta{Name: "standard", UID: "pc-2"}, Value: 10, GlobalDefault: true},
	} {
		if _, err := p.Propose(ctx, state.Create(pc)); err != nil {
			t.Fatal(err)
		}
	}
	owner := &metav1.ObjectMeta{Name: "web", Namespace: "default", UID: "o"}
	tmpl := func(class string, prio *int32) *corev1.PodTemplateSpec {
		return &corev1.PodTemplateSpec{Spec: corev1.PodSpec{PriorityClassName: class, Priority: prio,
			Containers: []corev1.Container{{Name: "c", Image: "i:1"}}}}
	}

	pod := NewPodFromTemplate(c, tmpl("batch", nil), owner, nil)
	if err := CreatePod(ctx, c, pod); err != nil {
		t.Fatal(err)
	}
	o, ok := c.Store.Get(ResourcePods, "default", pod.Name)
	if !ok {
		t.Fatal("pod not stored")
	}
	stored := o.(*corev1.Pod)
	if stored.Spec.Priority == nil || *stored.Spec.Priority != 100 || stored.Spec.PreemptionPolicy == nil || *stored.Spec.PreemptionPolicy != never {
		t.Errorf("stored priority %v policy %v, want 100 Never", stored.Spec.Priority, stored.Spec.PreemptionPolicy)
	}

	pod = NewPodFromTemplate(c, tmpl("", nil), owner, nil)
	if err := CreatePod(ctx, c, pod); err != nil {
		t.Fatal(err)
	}
	if pod.Spec.PriorityClassName != "standard" || *pod.Spec.Priority != 10 || *pod.Spec.PreemptionPolicy != corev1.PreemptLowerPriority {
		t.Errorf("default class: %q %v %v", pod.Spec.PriorityClassName, *pod.Spec.Priority, *pod.Spec.PreemptionPolicy)
	}

	_, before := c.Store.List(ResourcePods, "default")
	for _, tc := range []struct {
		name string
		tmpl *corev1.PodTemplateSpec
		want string
	}{
		{"missing class", tmpl("gold", nil), "no PriorityClass with name gold was found"},
		{"priority in the template", tmpl("batch", new(int32)), "the integer value of priority (0) must not be provided in pod spec; priority admission controller computed 100"},
	} {
		pod := NewPodFromTemplate(c, tc.tmpl, owner, nil)
		err := CreatePod(ctx, c, pod)
		if err == nil || !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), tc.want) ||
			!strings.HasPrefix(err.Error(), `pods "`+pod.Name+`" is forbidden: `) {
			t.Errorf("%s: err = %v, want Forbidden %q", tc.name, err, tc.want)
		}
		if UnknownOutcome(err) {
			t.Errorf("%s: a refusal counted as an unknown outcome", tc.name)
		}
	}
	if _, after := c.Store.List(ResourcePods, "default"); after != before {
		t.Errorf("refused creates changed the store (revision %d → %d)", before, after)
	}
}
