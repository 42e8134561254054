package apiserver

import (
	"bytes"
	"net/http/httptest"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var fuzzMediaTypes = []string{mediaJSON, mediaYAML, mediaProtobuf, "", "text/plain"}

func fuzzSeeds(f *testing.F) {
	f.Add(uint8(0), []byte(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","labels":{"x":"y"}},"data":{"k":"v"}}`))
	f.Add(uint8(0), []byte(`{"metadata":{"name":"a","name":"b"},"spec":{"containers":[{"name":"c","image":"i","ports":[{"containerPort":80}]}]}}`))
	f.Add(uint8(1), []byte("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {replicas: 2, selector: {matchLabels: {a: b}}}\n"))
	f.Add(uint8(1), []byte("a: &x [*x]\n"))
	var pb bytes.Buffer
	_ = protobufSerializer.Encode(&corev1.Secret{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: "s"}, Data: map[string][]byte{"k": []byte("v")}}, &pb)
	f.Add(uint8(2), pb.Bytes())
	f.Add(uint8(2), []byte("k8s\x00\x0a\x02v1"))
	f.Add(uint8(3), []byte(`null`))
}

// FuzzDecodeBody: the body decoder never panics, whatever the bytes and the
// content type, for several target types.
func FuzzDecodeBody(f *testing.F) {
	fuzzSeeds(f)
	targets := []struct {
		gvk schema.GroupVersionKind
		new func() runtime.Object
	}{
		{corev1.SchemeGroupVersion.WithKind("ConfigMap"), func() runtime.Object { return &corev1.ConfigMap{} }},
		{corev1.SchemeGroupVersion.WithKind("Secret"), func() runtime.Object { return &corev1.Secret{} }},
		{corev1.SchemeGroupVersion.WithKind("Pod"), func() runtime.Object { return &corev1.Pod{} }},
		{appsv1.SchemeGroupVersion.WithKind("Deployment"), func() runtime.Object { return &appsv1.Deployment{} }},
		{scaleGVK, func() runtime.Object { return &autoscalingv1.Scale{} }},
	}
	f.Fuzz(func(t *testing.T, mt uint8, data []byte) {
		media := fuzzMediaTypes[int(mt)%len(fuzzMediaTypes)]
		for _, tg := range targets {
			_, _ = decodeObject(media, data, tg.new(), tg.gvk, true)
			_, _ = decodeObject(media, data, tg.new(), tg.gvk, false)
		}
	})
}

// FuzzWrites sends arbitrary bodies to create, update, the three patch
// types and server-side apply: every answer is a well-formed 2xx or 4xx, never a 5xx (a panic
// would surface as a 500 from the recover middleware).
func FuzzWrites(f *testing.F) {
	fuzzSeeds(f)
	f.Add(uint8(5), []byte(`[{"op":"copy","from":"/data","path":"/data/x"},{"op":"move","from":"/metadata","path":"/data/y"}]`))
	f.Add(uint8(7), []byte(`{"data":{"$patch":"replace"},"metadata":{"$retainKeys":["name"],"finalizers":[{"$patch":"delete"}]}}`))
	f.Add(uint8(6), []byte(`{"metadata":{"labels":null,"name":null}}`))
	f.Add(uint8(10), []byte("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: target}\ndata: {a: c}\n"))
	f.Add(uint8(11), []byte("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    spec:\n      containers: [{name: c, image: i, ports: [{containerPort: 80}, {containerPort: 80, protocol: UDP}]}]\n"))
	f.Add(uint8(12), []byte("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nstatus: {replicas: 3, conditions: [{type: Available, status: \"True\"}]}\n"))
	e := newEnv(&testing.T{})
	e.ok(req{method: "POST", path: "/api/v1/namespaces/default/configmaps", body: cmBody("target", map[string]string{"a": "b"})}, 201, nil)
	e.ok(req{method: "POST", path: deployments, body: deployment("web", 1)}, 201, nil)
	type target struct{ method, path, ct string }
	targets := []target{
		{"POST", "/api/v1/namespaces/default/configmaps", ""},
		{"PUT", "/api/v1/namespaces/default/configmaps/target", ""},
		{"POST", deployments + "?fieldValidation=Strict", ""},
		{"PUT", deployments + "/web/status", ""},
		{"PUT", deployments + "/web/scale", ""},
		{"PATCH", "/api/v1/namespaces/default/configmaps/target", "application/json-patch+json"},
		{"PATCH", deployments + "/web", "application/merge-patch+json"},
		{"PATCH", deployments + "/web", "application/strategic-merge-patch+json"},
		{"PATCH", deployments + "/web/scale", "application/strategic-merge-patch+json"},
		{"DELETE", "/api/v1/namespaces/default/configmaps/nothing", ""},
		{"PATCH", "/api/v1/namespaces/default/configmaps/target?fieldManager=fuzz", applyYAML},
		{"PATCH", deployments + "/web?fieldManager=fuzz&force=true", applyYAML},
		{"PATCH", deployments + "/web/status?fieldManager=fuzz&fieldValidation=Strict", applyYAML},
		{"POST", "/api/v1/namespaces/default/configmaps?fieldManager=fuzz", ""},
	}
	f.Fuzz(func(t *testing.T, sel uint8, data []byte) {
		tg := targets[int(sel)%len(targets)]
		ct := tg.ct
		if ct == "" {
			ct = fuzzMediaTypes[int(sel/16)%len(fuzzMediaTypes)]
		}
		r := httptest.NewRequest(tg.method, tg.path, bytes.NewReader(data))
		r.Header.Set("Content-Type", ct)
		r.TLS = adminTLS
		w := httptest.NewRecorder()
		e.srv.ServeHTTP(w, r)
		if w.Code >= 500 {
			t.Fatalf("%s %s (%s): %d %s", tg.method, tg.path, ct, w.Code, w.Body.String())
		}
	})
}
