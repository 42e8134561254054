package apiserver

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/applyconfigurations"
	"sigs.k8s.io/structured-merge-diff/v4/value"

	"github.com/shoal-dev/shoal/node/apiserver/internal/smdschema"
	"github.com/shoal-dev/shoal/node/state"
)

// TestSMDSchemaUpToDate: the embedded schemas are what the generator makes
// from the client-go in go.mod.
func TestSMDSchemaUpToDate(t *testing.T) {
	b, err := smdschema.Subset(smdschema.Served)
	if err != nil {
		t.Fatal(err)
	}
	if smdSchemaYAML != smdschema.Header+string(b) {
		t.Fatal("smdschema.yaml is stale: run `go generate ./node/apiserver`")
	}
}

// TestTypeConverterMatchesClientGo: every served kind converts to the same
// structured-merge-diff value with the embedded subset as with client-go's
// full schemas (which the subset must not lack a type of).
func TestTypeConverterMatchesClientGo(t *testing.T) {
	ours, err := typeConverter()
	if err != nil {
		t.Fatal(err)
	}
	theirs := applyconfigurations.NewTypeConverter(scheme)
	filled := map[string]runtime.Object{
		"Pod": &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i",
			Ports: []corev1.ContainerPort{{ContainerPort: 80, Protocol: corev1.ProtocolTCP}}}}}},
		"Deployment": &appsv1.Deployment{Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"a": "b"}}}},
	}
	for _, k := range state.Kinds {
		var obj runtime.Object = k.New()
		if f, ok := filled[k.GVK().Kind]; ok {
			obj = f
		}
		obj.GetObjectKind().SetGroupVersionKind(k.GVK())
		a, err := ours.ObjectToTyped(obj)
		if err != nil {
			t.Errorf("%s: %v", k.GVK(), err)
			continue
		}
		b, err := theirs.ObjectToTyped(obj)
		if err != nil {
			t.Fatalf("%s with client-go's schemas: %v", k.GVK(), err)
		}
		fa, errA := a.ToFieldSet()
		fb, errB := b.ToFieldSet()
		if errA != nil || errB != nil || !fa.Equals(fb) || !value.Equals(a.AsValue(), b.AsValue()) {
			t.Errorf("%s: the subset's value differs from client-go's (%v, %v):\n%s\n%s", k.GVK(), errA, errB, fa, fb)
		}
	}
}
