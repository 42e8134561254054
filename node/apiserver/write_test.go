package apiserver

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

const deployments = "/apis/apps/v1/namespaces/default/deployments"

func TestStatusSubresourceAndGeneration(t *testing.T) {
	e := newEnv(t)
	d := deployment("web", 2)
	d.Status.Replicas = 99 // ignored on create
	var got appsv1.Deployment
	e.ok(req{method: "POST", path: deployments, body: d}, 201, &got)
	if got.Generation != 1 || got.Status.Replicas != 0 {
		t.Fatalf("created generation %d status %+v", got.Generation, got.Status)
	}

	// The main resource ignores status changes; labels do not bump generation.
	upd := got.DeepCopy()
	upd.Status.Replicas = 5
	upd.Labels = map[string]string{"tier": "front"}
	e.ok(req{method: "PUT", path: deployments + "/web", body: upd}, 200, &got)
	if got.Status.Replicas != 0 || got.Generation != 1 || got.Labels["tier"] != "front" {
		t.Fatalf("after main PUT: generation %d status %d labels %v", got.Generation, got.Status.Replicas, got.Labels)
	}

	// The status subresource changes only status.
	upd = got.DeepCopy()
	upd.Status.Replicas, upd.Status.ObservedGeneration = 2, 1
	upd.Spec.Replicas = ptr(int32(7))
	upd.Labels = nil
	e.ok(req{method: "PUT", path: deployments + "/web/status", body: upd}, 200, &got)
	if got.Status.Replicas != 2 || *got.Spec.Replicas != 2 || got.Generation != 1 || got.Labels["tier"] != "front" {
		t.Fatalf("after status PUT: %+v %+v gen %d", got.Spec.Replicas, got.Status, got.Generation)
	}
	var gotStatus appsv1.Deployment
	e.ok(req{method: "GET", path: deployments + "/web/status"}, 200, &gotStatus)
	if gotStatus.Status.Replicas != 2 {
		t.Fatalf("GET status: %+v", gotStatus.Status)
	}
	// Status patch.
	e.ok(req{method: "PATCH", path: deployments + "/web/status", ct: "application/merge-patch+json",
		body: `{"status":{"availableReplicas":2},"spec":{"replicas":9}}`}, 200, &got)
	if got.Status.AvailableReplicas != 2 || *got.Spec.Replicas != 2 {
		t.Fatalf("after status PATCH: %+v %+v", *got.Spec.Replicas, got.Status)
	}

	// A spec change bumps generation; the status survives.
	upd = got.DeepCopy()
	upd.Spec.Template.Spec.Containers[0].Image = "nginx:1.26"
	upd.Status = appsv1.DeploymentStatus{}
	e.ok(req{method: "PUT", path: deployments + "/web", body: upd}, 200, &got)
	if got.Generation != 2 || got.Status.Replicas != 2 {
		t.Fatalf("after spec PUT: generation %d status %+v", got.Generation, got.Status)
	}
	// uid and creationTimestamp cannot be changed.
	upd = got.DeepCopy()
	upd.CreationTimestamp = metav1.NewTime(time.Unix(1, 0))
	e.ok(req{method: "PUT", path: deployments + "/web", body: upd}, 200, &got)
	if got.CreationTimestamp.Unix() == 1 {
		t.Fatal("creationTimestamp changed")
	}
	upd = got.DeepCopy()
	upd.UID = "someone-else"
	e.ok(req{method: "PUT", path: deployments + "/web", body: upd}, 409, nil)
	// Selectors are immutable.
	upd = got.DeepCopy()
	upd.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web", "x": "y"}}
	upd.Spec.Template.Labels["x"] = "y"
	st := status(t, e.ok(req{method: "PUT", path: deployments + "/web", body: upd}, 422, nil))
	if !slices.Contains(causes(st), "spec.selector") {
		t.Fatalf("selector change: %+v", st)
	}
}

func TestScaleSubresource(t *testing.T) {
	e := newEnv(t)
	e.ok(req{method: "POST", path: deployments, body: deployment("web", 2)}, 201, nil)
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "rs"},
		Spec: appsv1.ReplicaSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"a": "b"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"a": "b"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i"}}}},
		},
	}
	e.ok(req{method: "POST", path: "/apis/apps/v1/namespaces/default/replicasets", body: rs}, 201, nil)
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "db"}, Spec: appsv1.StatefulSetSpec{
		Selector: rs.Spec.Selector, Template: rs.Spec.Template, ServiceName: "db"}}
	e.ok(req{method: "POST", path: "/apis/apps/v1/namespaces/default/statefulsets", body: sts}, 201, nil)

	for _, tc := range []struct {
		path string
		want int32
	}{
		{deployments + "/web/scale", 2},
		{"/apis/apps/v1/namespaces/default/replicasets/rs/scale", 1},
		{"/apis/apps/v1/namespaces/default/statefulsets/db/scale", 1},
	} {
		var sc autoscalingv1.Scale
		e.ok(req{method: "GET", path: tc.path}, 200, &sc)
		if sc.Kind != "Scale" || sc.APIVersion != "autoscaling/v1" || sc.Spec.Replicas != tc.want || sc.Status.Selector == "" {
			t.Fatalf("%s: %+v", tc.path, sc)
		}
		// PUT with the Scale's resourceVersion, as kubectl scale --resource-version does.
		sc.Spec.Replicas = 4
		e.ok(req{method: "PUT", path: tc.path, body: &sc}, 200, &sc)
		if sc.Spec.Replicas != 4 {
			t.Fatalf("%s after PUT: %+v", tc.path, sc.Spec)
		}
		stale := sc.DeepCopy()
		stale.ResourceVersion = "1"
		e.ok(req{method: "PUT", path: tc.path, body: stale}, 409, nil)
		// kubectl scale sends a merge patch.
		e.ok(req{method: "PATCH", path: tc.path, ct: "application/merge-patch+json", body: `{"spec":{"replicas":6}}`}, 200, &sc)
		if sc.Spec.Replicas != 6 {
			t.Fatalf("%s after PATCH: %+v", tc.path, sc.Spec)
		}
		st := status(t, e.ok(req{method: "PATCH", path: tc.path, ct: "application/merge-patch+json", body: `{"spec":{"replicas":-1}}`}, 422, nil))
		if !slices.Contains(causes(st), "spec.replicas") {
			t.Fatalf("negative replicas: %+v", st)
		}
	}
	var d appsv1.Deployment
	e.ok(req{method: "GET", path: deployments + "/web"}, 200, &d)
	if *d.Spec.Replicas != 6 || d.Generation != 3 {
		t.Fatalf("deployment after scaling: replicas %d generation %d", *d.Spec.Replicas, d.Generation)
	}
	e.ok(req{method: "GET", path: "/api/v1/namespaces/default/configmaps/x/scale"}, 404, nil)
}

func TestPatchTypes(t *testing.T) {
	e := newEnv(t)
	e.ok(req{method: "POST", path: deployments, body: deployment("web", 1)}, 201, nil)
	path := deployments + "/web"
	var d appsv1.Deployment

	// JSON patch (kubectl rollout undo, kubectl patch --type=json).
	e.ok(req{method: "PATCH", path: path, ct: "application/json-patch+json",
		body: `[{"op":"replace","path":"/spec/replicas","value":3},{"op":"add","path":"/metadata/labels","value":{"a":"b"}}]`}, 200, &d)
	if *d.Spec.Replicas != 3 || d.Labels["a"] != "b" || d.Generation != 2 {
		t.Fatalf("after JSON patch: replicas %d labels %v generation %d", *d.Spec.Replicas, d.Labels, d.Generation)
	}

	// Merge patch replaces lists wholesale and deletes with null.
	e.ok(req{method: "PATCH", path: path, ct: "application/merge-patch+json",
		body: `{"metadata":{"labels":{"a":null,"c":"d"}}}`}, 200, &d)
	if _, ok := d.Labels["a"]; ok || d.Labels["c"] != "d" || d.Generation != 2 {
		t.Fatalf("after merge patch: labels %v generation %d", d.Labels, d.Generation)
	}

	// Strategic merge patch merges containers by name: change one container,
	// add one, keep the other, in the order $setElementOrder gives.
	smp := `{
	  "spec":{"template":{"spec":{
	    "$setElementOrder/containers":[{"name":"sidecar"},{"name":"web"},{"name":"log"}],
	    "containers":[{"name":"web","image":"nginx:1.27"},{"name":"log","image":"fluentbit"}]
	  }}}}`
	e.ok(req{method: "PATCH", path: path + "?fieldValidation=Strict", ct: "application/strategic-merge-patch+json", body: smp}, 200, &d)
	cs := d.Spec.Template.Spec.Containers
	var names []string
	for _, c := range cs {
		names = append(names, c.Name+"="+c.Image)
	}
	if !slices.Equal(names, []string{"sidecar=busybox", "web=nginx:1.27", "log=fluentbit"}) {
		t.Fatalf("containers after SMP: %v", names)
	}
	if cs[1].Ports[0].ContainerPort != 80 || cs[2].ImagePullPolicy != corev1.PullAlways || cs[2].TerminationMessagePath == "" {
		t.Fatalf("SMP lost fields or defaults: %+v", cs)
	}
	if d.Generation != 3 {
		t.Fatalf("generation %d after a spec patch", d.Generation)
	}
	// $patch: delete removes by key.
	e.ok(req{method: "PATCH", path: path, ct: "application/strategic-merge-patch+json",
		body: `{"spec":{"template":{"spec":{"containers":[{"name":"log","$patch":"delete"}]}}}}`}, 200, &d)
	if len(d.Spec.Template.Spec.Containers) != 2 {
		t.Fatalf("after $patch delete: %d containers", len(d.Spec.Template.Spec.Containers))
	}
	// A patch pinned to a stale resourceVersion conflicts.
	e.ok(req{method: "PATCH", path: path, ct: "application/merge-patch+json", body: `{"metadata":{"resourceVersion":"1"},"spec":{"replicas":1}}`}, 409, nil)
	// Patching what does not exist.
	e.ok(req{method: "PATCH", path: deployments + "/nope", ct: "application/merge-patch+json", body: `{}`}, 404, nil)
	// Patch on a core kind with a list of scalars (finalizers).
	e.ok(req{method: "POST", path: "/api/v1/namespaces/default/configmaps", body: cmBody("c", map[string]string{"a": "1"})}, 201, nil)
	var cm corev1.ConfigMap
	e.ok(req{method: "PATCH", path: "/api/v1/namespaces/default/configmaps/c", ct: "application/strategic-merge-patch+json",
		body: `{"data":{"b":"2"},"metadata":{"finalizers":["x/y"]}}`}, 200, &cm)
	if cm.Data["a"] != "1" || cm.Data["b"] != "2" || !slices.Equal(cm.Finalizers, []string{"x/y"}) {
		t.Fatalf("configmap after SMP: %+v", cm)
	}
}

func TestProtobufCreate(t *testing.T) {
	e := newEnv(t)
	s := &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: "pb"},
		Data:       map[string][]byte{"password": []byte("hunter2")},
	}
	var buf bytes.Buffer
	if err := protobufSerializer.Encode(s, &buf); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(buf.Bytes(), []byte("k8s\x00")) {
		t.Fatalf("not the kubectl wire format: %q", buf.Bytes()[:8])
	}
	var got corev1.Secret
	w := e.ok(req{method: "POST", path: "/api/v1/namespaces/default/secrets", ct: "application/vnd.kubernetes.protobuf", body: buf.Bytes()}, 201, &got)
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("answer Content-Type %q", ct)
	}
	if string(got.Data["password"]) != "hunter2" || got.Type != corev1.SecretTypeOpaque || got.UID == "" {
		t.Fatalf("created %+v", got)
	}
	// A protobuf body of another kind is refused.
	buf.Reset()
	if err := protobufSerializer.Encode(&corev1.ConfigMap{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"}, ObjectMeta: metav1.ObjectMeta{Name: "x"}}, &buf); err != nil {
		t.Fatal(err)
	}
	e.ok(req{method: "POST", path: "/api/v1/namespaces/default/secrets", ct: "application/vnd.kubernetes.protobuf", body: buf.Bytes()}, 400, nil)
	// Protobuf DeleteOptions, as typed clients send them.
	buf.Reset()
	fg := metav1.DeletePropagationForeground
	if err := protobufSerializer.Encode(&metav1.DeleteOptions{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "DeleteOptions"}, PropagationPolicy: &fg}, &buf); err != nil {
		t.Fatal(err)
	}
	e.ok(req{method: "DELETE", path: "/api/v1/namespaces/default/secrets/pb", ct: "application/vnd.kubernetes.protobuf", body: buf.Bytes()}, 200, &got)
	if got.DeletionTimestamp == nil || !slices.Contains(got.Finalizers, "foregroundDeletion") {
		t.Fatalf("foreground delete: %+v", got.ObjectMeta)
	}
}

func TestDefaults(t *testing.T) {
	e := newEnv(t)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{
		Containers: []corev1.Container{
			{Name: "a", Image: "nginx", Ports: []corev1.ContainerPort{{ContainerPort: 80}}},
			{Name: "b", Image: "nginx:latest"},
			{Name: "c", Image: "registry:5000/nginx:1.2"},
			{Name: "d", Image: "registry:5000/nginx"},
			{Name: "e", Image: "nginx@sha256:abc"},
		},
	}}
	var p corev1.Pod
	e.ok(req{method: "POST", path: "/api/v1/namespaces/default/pods", body: pod}, 201, &p)
	if p.Spec.RestartPolicy != corev1.RestartPolicyAlways || p.Spec.DNSPolicy != corev1.DNSClusterFirst ||
		*p.Spec.TerminationGracePeriodSeconds != 30 || p.Spec.SchedulerName != "default-scheduler" || p.Status.Phase != corev1.PodPending {
		t.Fatalf("pod defaults: %+v %+v", p.Spec, p.Status)
	}
	var policies []corev1.PullPolicy
	for _, c := range p.Spec.Containers {
		policies = append(policies, c.ImagePullPolicy)
		if c.TerminationMessagePath != "/dev/termination-log" || c.TerminationMessagePolicy != corev1.TerminationMessageReadFile {
			t.Fatalf("container defaults: %+v", c)
		}
	}
	if !slices.Equal(policies, []corev1.PullPolicy{"Always", "Always", "IfNotPresent", "Always", "IfNotPresent"}) {
		t.Fatalf("pull policies %v", policies)
	}
	if p.Spec.Containers[0].Ports[0].Protocol != corev1.ProtocolTCP {
		t.Fatal("container port protocol not defaulted")
	}

	var svc corev1.Service
	e.ok(req{method: "POST", path: "/api/v1/namespaces/default/services", body: &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "s"},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}}, 201, &svc)
	if sp := svc.Spec.Ports[0]; sp.Protocol != corev1.ProtocolTCP || sp.TargetPort != intstr.FromInt32(80) ||
		svc.Spec.Type != corev1.ServiceTypeClusterIP || svc.Spec.SessionAffinity != corev1.ServiceAffinityNone {
		t.Fatalf("service defaults: %+v", svc.Spec)
	}

	var d appsv1.Deployment
	dep := deployment("d", 0)
	dep.Spec.Replicas = nil
	e.ok(req{method: "POST", path: deployments, body: dep}, 201, &d)
	if *d.Spec.Replicas != 1 || d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType ||
		d.Spec.Strategy.RollingUpdate.MaxSurge.String() != "25%" || d.Spec.Strategy.RollingUpdate.MaxUnavailable.String() != "25%" ||
		*d.Spec.RevisionHistoryLimit != 10 || *d.Spec.ProgressDeadlineSeconds != 600 || d.Spec.Template.Spec.RestartPolicy != corev1.RestartPolicyAlways {
		t.Fatalf("deployment defaults: %+v", d.Spec)
	}

	var sts appsv1.StatefulSet
	e.ok(req{method: "POST", path: "/apis/apps/v1/namespaces/default/statefulsets", body: &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "s"},
		Spec: appsv1.StatefulSetSpec{Selector: dep.Spec.Selector, Template: dep.Spec.Template}}}, 201, &sts)
	if *sts.Spec.Replicas != 1 || sts.Spec.PodManagementPolicy != appsv1.OrderedReadyPodManagement || sts.Spec.UpdateStrategy.Type != appsv1.RollingUpdateStatefulSetStrategyType {
		t.Fatalf("statefulset defaults: %+v", sts.Spec)
	}
	var ds appsv1.DaemonSet
	e.ok(req{method: "POST", path: "/apis/apps/v1/namespaces/default/daemonsets", body: &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "ds"},
		Spec: appsv1.DaemonSetSpec{Selector: dep.Spec.Selector, Template: dep.Spec.Template}}}, 201, &ds)
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType || ds.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable.IntValue() != 1 {
		t.Fatalf("daemonset defaults: %+v", ds.Spec.UpdateStrategy)
	}

	jobTmpl := corev1.PodTemplateSpec{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
	var job batchv1.Job
	e.ok(req{method: "POST", path: "/apis/batch/v1/namespaces/default/jobs", body: &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "j"},
		Spec: batchv1.JobSpec{Template: jobTmpl}}}, 201, &job)
	if *job.Spec.Completions != 1 || *job.Spec.Parallelism != 1 || *job.Spec.BackoffLimit != 6 || *job.Spec.CompletionMode != batchv1.NonIndexedCompletion ||
		job.Spec.Selector == nil || job.Spec.Template.Labels["batch.kubernetes.io/job-name"] != "j" || job.Spec.Template.Labels["batch.kubernetes.io/controller-uid"] != string(job.UID) {
		t.Fatalf("job defaults: %+v", job.Spec)
	}
	var cj batchv1.CronJob
	e.ok(req{method: "POST", path: "/apis/batch/v1/namespaces/default/cronjobs", body: &batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Name: "cj"},
		Spec: batchv1.CronJobSpec{Schedule: "*/5 * * * *", JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: jobTmpl}}}}}, 201, &cj)
	if cj.Spec.ConcurrencyPolicy != batchv1.AllowConcurrent || *cj.Spec.Suspend || *cj.Spec.SuccessfulJobsHistoryLimit != 3 || *cj.Spec.FailedJobsHistoryLimit != 1 {
		t.Fatalf("cronjob defaults: %+v", cj.Spec)
	}
	var sec corev1.Secret
	e.ok(req{method: "POST", path: "/api/v1/namespaces/default/secrets", body: &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s"}}}, 201, &sec)
	if sec.Type != corev1.SecretTypeOpaque {
		t.Fatalf("secret type %q", sec.Type)
	}
	var ns corev1.Namespace
	e.ok(req{method: "POST", path: "/api/v1/namespaces", body: &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team"}}}, 201, &ns)
	if ns.Status.Phase != corev1.NamespaceActive || ns.Labels["kubernetes.io/metadata.name"] != "team" {
		t.Fatalf("namespace defaults: %+v", ns)
	}
}

func TestKindValidation(t *testing.T) {
	e := newEnv(t)
	podWith := func(cs ...corev1.Container) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{Containers: cs}}
	}
	badDep := deployment("d", -1)
	badDep.Spec.Template.Labels = map[string]string{"app": "other"}
	noSel := deployment("d", 1)
	noSel.Spec.Selector = nil
	jobAlways := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "j"}, Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i"}}}}}}
	tests := []struct {
		name   string
		path   string
		body   runtime.Object
		fields []string
	}{
		{"pod without containers", "/api/v1/namespaces/default/pods", podWith(), []string{"spec.containers"}},
		{"pod container problems", "/api/v1/namespaces/default/pods", podWith(
			corev1.Container{Name: "a", Image: "i"},
			corev1.Container{Name: "a", Image: "i"},
			corev1.Container{Name: "Bad_Name"},
			corev1.Container{Name: "p", Image: "i", Ports: []corev1.ContainerPort{{ContainerPort: 70000}, {ContainerPort: 80, Protocol: "ICMP"}}},
		), []string{"spec.containers[1].name", "spec.containers[2].name", "spec.containers[2].image", "spec.containers[3].ports[0].containerPort", "spec.containers[3].ports[1].protocol"}},
		{"deployment", deployments, badDep, []string{"spec.replicas", "spec.template.metadata.labels"}},
		{"deployment without selector", deployments, noSel, []string{"spec.selector"}},
		{"job restartPolicy", "/apis/batch/v1/namespaces/default/jobs", jobAlways, []string{"spec.template.spec.restartPolicy"}},
		{"service", "/api/v1/namespaces/default/services", &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "s"}, Spec: corev1.ServiceSpec{
			Ports: []corev1.ServicePort{{Name: "a", Port: 0}, {Name: "a", Port: 80}, {Port: 81}}}},
			[]string{"spec.ports[0].port", "spec.ports[1].name", "spec.ports[2].name"}},
		{"service name is a DNS-1035 label", "/api/v1/namespaces/default/services", &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "1svc"}, Spec: corev1.ServiceSpec{
			Ports: []corev1.ServicePort{{Port: 80}}}}, []string{"metadata.name"}},
		{"namespace name is a DNS label", "/api/v1/namespaces", &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "a.b"}}, []string{"metadata.name"}},
		{"node name", "/api/v1/nodes", &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "Node_1"}}, []string{"metadata.name"}},
		{"configmap too large", "/api/v1/namespaces/default/configmaps", &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "c"},
			Data: map[string]string{"a": strings.Repeat("x", 600<<10), "b": strings.Repeat("x", 600<<10)}}, []string{"data"}},
		{"tls secret", "/api/v1/namespaces/default/secrets", &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s"}, Type: corev1.SecretTypeTLS},
			[]string{"data[tls.crt]", "data[tls.key]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rev := e.store.Revision()
			st := status(t, e.ok(req{method: "POST", path: tt.path, body: tt.body}, 422, nil))
			got := causes(st)
			for _, f := range tt.fields {
				if !slices.Contains(got, f) {
					t.Errorf("causes %v lack %q: %s", got, f, st.Message)
				}
			}
			if e.store.Revision() != rev {
				t.Fatal("store changed")
			}
		})
	}

	// Secret type and immutable data cannot change.
	var s corev1.Secret
	e.ok(req{method: "POST", path: "/api/v1/namespaces/default/secrets", body: &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "imm"},
		Immutable: ptr(true), Data: map[string][]byte{"a": []byte("b")}}}, 201, &s)
	s2 := s.DeepCopy()
	s2.Type = corev1.SecretTypeBasicAuth
	e.ok(req{method: "PUT", path: "/api/v1/namespaces/default/secrets/imm", body: s2}, 422, nil)
	s2 = s.DeepCopy()
	s2.Data["a"] = []byte("c")
	e.ok(req{method: "PUT", path: "/api/v1/namespaces/default/secrets/imm", body: s2}, 422, nil)

	// Pods: only a few spec fields may change.
	var p corev1.Pod
	e.ok(req{method: "POST", path: "/api/v1/namespaces/default/pods", body: podWith(corev1.Container{Name: "a", Image: "i:1"})}, 201, &p)
	p.Spec.Containers[0].Image = "i:2"
	e.ok(req{method: "PUT", path: "/api/v1/namespaces/default/pods/p", body: &p}, 200, &p)
	p.Spec.Containers[0].Command = []string{"sh"}
	e.ok(req{method: "PUT", path: "/api/v1/namespaces/default/pods/p", body: &p}, 422, nil)
}

func TestDeleteWithFinalizers(t *testing.T) {
	e := newEnv(t)
	base := "/api/v1/namespaces/default/configmaps"
	e.ok(req{method: "POST", path: base, body: map[string]any{"metadata": map[string]any{"name": "f", "finalizers": []string{"example.com/hold"}}}}, 201, nil)
	var cm corev1.ConfigMap
	e.ok(req{method: "DELETE", path: base + "/f"}, 200, &cm)
	if cm.DeletionTimestamp == nil || cm.DeletionGracePeriodSeconds == nil {
		t.Fatalf("not marked for deletion: %+v", cm.ObjectMeta)
	}
	// Deleting again is fine; it stays.
	e.ok(req{method: "DELETE", path: base + "/f"}, 200, &cm)
	// New finalizers cannot be added while deleting.
	upd := cm.DeepCopy()
	upd.Finalizers = append(upd.Finalizers, "another/one")
	e.ok(req{method: "PUT", path: base + "/f", body: upd}, 422, nil)
	// Emptying the finalizers deletes it.
	e.ok(req{method: "PATCH", path: base + "/f", ct: "application/merge-patch+json", body: `{"metadata":{"finalizers":null}}`}, 200, nil)
	if _, ok := e.store.Get("configmaps", "default", "f"); ok {
		t.Fatal("object with emptied finalizers still stored")
	}

	// Orphan adds the orphan finalizer; Background (kubectl's) deletes now.
	e.ok(req{method: "POST", path: base, body: cmBody("o", nil)}, 201, nil)
	e.ok(req{method: "DELETE", path: base + "/o", body: `{"kind":"DeleteOptions","apiVersion":"v1","propagationPolicy":"Orphan"}`}, 200, &cm)
	if !slices.Equal(cm.Finalizers, []string{"orphan"}) || cm.DeletionTimestamp == nil {
		t.Fatalf("orphan delete: %+v", cm.ObjectMeta)
	}
	e.ok(req{method: "POST", path: base, body: cmBody("b", nil)}, 201, nil)
	e.ok(req{method: "DELETE", path: base + "/b?propagationPolicy=Background"}, 200, nil)
	if _, ok := e.store.Get("configmaps", "default", "b"); ok {
		t.Fatal("background delete kept the object")
	}
	// Pods are deleted now and answered with the object.
	e.ok(req{method: "POST", path: "/api/v1/namespaces/default/pods", body: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i"}}}}}, 201, nil)
	var p corev1.Pod
	e.ok(req{method: "DELETE", path: "/api/v1/namespaces/default/pods/p"}, 200, &p)
	if p.Name != "p" || p.Kind != "Pod" {
		t.Fatalf("pod delete answered %+v", p)
	}

	// deletecollection with a selector.
	for _, n := range []string{"x1", "x2", "y1"} {
		e.ok(req{method: "POST", path: base, body: map[string]any{"metadata": map[string]any{"name": n, "labels": map[string]string{"g": n[:1]}}}}, 201, nil)
	}
	var l corev1.ConfigMapList
	e.ok(req{method: "DELETE", path: base + "?labelSelector=g%3Dx"}, 200, &l)
	if len(l.Items) != 2 {
		t.Fatalf("deletecollection deleted %d", len(l.Items))
	}
	if _, ok := e.store.Get("configmaps", "default", "y1"); !ok {
		t.Fatal("deletecollection deleted outside its selector")
	}
}

func TestNamespaceDeletion(t *testing.T) {
	e := newEnv(t)
	e.ok(req{method: "POST", path: "/api/v1/namespaces", body: &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team"}}}, 201, nil)
	for i := 0; i < 250; i++ {
		e.ok(req{method: "POST", path: "/api/v1/namespaces/team/configmaps", body: cmBody("cm"+strings.Repeat("x", i%3)+string(rune('a'+i%26))+itoa(i), nil)}, 201, nil)
	}
	e.ok(req{method: "POST", path: "/apis/apps/v1/namespaces/team/deployments", body: deployment("web", 1)}, 201, nil)
	e.ok(req{method: "POST", path: "/api/v1/namespaces/default/configmaps", body: cmBody("keep", nil)}, 201, nil)

	// Stop the finalizer before it runs so Terminating can be observed.
	var ns corev1.Namespace
	e.ok(req{method: "DELETE", path: "/api/v1/namespaces/team"}, 200, &ns)
	if ns.Status.Phase != corev1.NamespaceTerminating || ns.DeletionTimestamp == nil {
		t.Fatalf("namespace after delete: %+v", ns)
	}
	w := e.do(req{method: "POST", path: "/api/v1/namespaces/team/configmaps", body: cmBody("late", nil)})
	if w.Code != 403 && w.Code != 404 { // 404 once it is already gone
		t.Fatalf("create in terminating namespace: %d %s", w.Code, w.Body.String())
	}
	waitFor(t, "namespace team to go", func() bool {
		_, ok := e.store.Get("namespaces", "", "team")
		return !ok
	})
	if objs, _ := e.store.List("configmaps", "team"); len(objs) != 0 {
		t.Fatalf("%d configmaps left in a deleted namespace", len(objs))
	}
	if objs, _ := e.store.List("deployments.apps", "team"); len(objs) != 0 {
		t.Fatal("deployment left in a deleted namespace")
	}
	if _, ok := e.store.Get("configmaps", "default", "keep"); !ok {
		t.Fatal("deleted a configmap of another namespace")
	}
	for _, n := range []string{"default", "kube-system", "kube-public", "kube-node-lease"} {
		e.ok(req{method: "DELETE", path: "/api/v1/namespaces/" + n}, 403, nil)
	}
}

func itoa(i int) string {
	return strings.TrimSpace(strings.Repeat(" ", 0) + string(rune('0'+i/100)) + string(rune('0'+i/10%10)) + string(rune('0'+i%10)))
}
