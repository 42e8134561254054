package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
)

// TestDeploymentRollout: the leader schedules and heals. A 6-replica
// Deployment spreads over 3 nodes; a rolling update never has fewer than
// replicas − maxUnavailable ready pods (checked by a watcher throughout);
// `kubectl rollout undo` goes back; deleting the Deployment removes its
// ReplicaSets and pods.
func TestDeploymentRollout(t *testing.T) {
	c := newCluster(t, 3)
	importImages(t, c, "n1")
	cs := clientset(t, c)
	ctx := context.Background()
	replicas := int32(6)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{
				MaxUnavailable: ptr(intstr.FromInt32(1)), MaxSurge: ptr(intstr.FromInt32(1)),
			}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec:       echoPod("x", "").Spec,
			},
		},
	}
	dep.Spec.Template.Spec.TerminationGracePeriodSeconds = ptr(int64(1))
	dep.Spec.Template.Spec.Containers[0].Env = append(dep.Spec.Template.Spec.Containers[0].Env, corev1.EnvVar{Name: "VERSION", Value: "1"})
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if out, err := kubectl(t, c, "rollout", "status", "deployment/web", "--timeout=120s"); err != nil {
		t.Fatalf("rollout status: %v\n%s", err, out)
	}
	perNode := map[string]int{}
	pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodRunning {
			perNode[p.Spec.NodeName]++
		}
	}
	if len(perNode) != 3 || perNode["n1"] != 2 || perNode["n2"] != 2 || perNode["n3"] != 2 {
		t.Errorf("6 replicas over 3 nodes: %v", perNode)
	}

	// Rolling update, watched: ready pods never drop below 5.
	w, err := cs.CoreV1().Pods("default").Watch(ctx, metav1.ListOptions{LabelSelector: "app=web", ResourceVersion: pods.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	ready := map[string]bool{}
	for _, p := range pods.Items {
		ready[p.Name] = podReady(&p) && p.DeletionTimestamp == nil
	}
	minReady, minSeen := countTrue(ready), countTrue(ready)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			ready[p.Name] = ev.Type != "DELETED" && podReady(p) && p.DeletionTimestamp == nil
			if n := countTrue(ready); n < minSeen {
				minSeen = n
			}
		}
	}()
	if out, err := kubectl(t, c, "set", "env", "deployment/web", "VERSION=2"); err != nil {
		t.Fatalf("set env: %v\n%s", err, out)
	}
	if out, err := kubectl(t, c, "rollout", "status", "deployment/web", "--timeout=180s"); err != nil {
		t.Fatalf("rollout status after update: %v\n%s", err, out)
	}
	w.Stop()
	<-done
	if minSeen < int(replicas)-1 {
		t.Errorf("during the rolling update only %d pods were ready (want ≥ %d; %d before)", minSeen, replicas-1, minReady)
	}
	t.Logf("rolling update: at least %d of %d pods ready throughout", minSeen, replicas)
	if got := envOfPods(t, cs, "VERSION"); got != "2" {
		t.Errorf("after the update the pods run VERSION=%s", got)
	}
	out, err := kubectl(t, c, "rollout", "history", "deployment/web")
	if err != nil || !strings.Contains(out, "1") || !strings.Contains(out, "2") {
		t.Errorf("rollout history: %v\n%s", err, out)
	}

	// Undo goes back to VERSION=1.
	if out, err := kubectl(t, c, "rollout", "undo", "deployment/web"); err != nil {
		t.Fatalf("rollout undo: %v\n%s", err, out)
	}
	if out, err := kubectl(t, c, "rollout", "status", "deployment/web", "--timeout=180s"); err != nil {
		t.Fatalf("rollout status after undo: %v\n%s", err, out)
	}
	eventually(t, 60*time.Second, func() error {
		if got := envOfPods(t, cs, "VERSION"); got != "1" {
			return fmt.Errorf("after undo the pods run VERSION=%s", got)
		}
		return nil
	})

	// Deleting the Deployment removes its ReplicaSets and pods.
	if out, err := kubectl(t, c, "delete", "deployment", "web", "--timeout=120s"); err != nil {
		t.Fatalf("delete deployment: %v\n%s", err, out)
	}
	eventually(t, 60*time.Second, func() error {
		rs, err := cs.AppsV1().ReplicaSets("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			return err
		}
		if len(rs.Items) != 0 || len(pods.Items) != 0 {
			return fmt.Errorf("%d ReplicaSets and %d pods left", len(rs.Items), len(pods.Items))
		}
		return nil
	})
}

func countTrue(m map[string]bool) int {
	n := 0
	for _, v := range m {
		if v {
			n++
		}
	}
	return n
}

// envOfPods is the value of an env var in every live web pod ("mixed" if
// they differ, "none" if there are none).
func envOfPods(t testing.TB, cs kubernetes.Interface, name string) string {
	t.Helper()
	pods, err := cs.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	val := "none"
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil {
			continue
		}
		v := ""
		for _, e := range p.Spec.Containers[0].Env {
			if e.Name == name {
				v = e.Value
			}
		}
		switch val {
		case "none":
			val = v
		case v:
		default:
			return "mixed"
		}
	}
	return val
}

// TestUnschedulablePods: a pod that fits nowhere stays Pending with
// kube-scheduler's message and a FailedScheduling event, and is placed as
// soon as the cluster changes so that it fits.
func TestUnschedulablePods(t *testing.T) {
	c := newCluster(t, 3)
	importImages(t, c, "n1")
	cs := clientset(t, c)
	ctx := context.Background()
	huge := echoPod("huge", "")
	huge.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: mustQuantity("1000")}
	picky := echoPod("picky", "")
	picky.Spec.NodeSelector = map[string]string{"disk": "ssd"}
	for _, p := range []*corev1.Pod{huge, picky} {
		if _, err := cs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for name, want := range map[string]string{
		"huge":  "0/3 nodes are available: 3 Insufficient cpu.",
		"picky": "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.",
	} {
		p := waitPod(t, cs, "default", name, 30*time.Second, "Unschedulable", func(p *corev1.Pod) bool {
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == "Unschedulable" {
					return true
				}
			}
			return false
		})
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodScheduled && !strings.HasPrefix(cond.Message, want) {
				t.Errorf("%s: message %q, want it to start with %q", name, cond.Message, want)
			}
		}
		if p.Status.Phase != corev1.PodPending || p.Spec.NodeName != "" {
			t.Errorf("%s: %s on %q", name, p.Status.Phase, p.Spec.NodeName)
		}
	}
	eventually(t, 10*time.Second, func() error {
		evs, err := cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=picky"})
		if err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Reason == "FailedScheduling" && e.Type == corev1.EventTypeWarning {
				return nil
			}
		}
		return fmt.Errorf("no FailedScheduling event for picky: %+v", evs.Items)
	})
	// Labelling a node makes picky fit: it is placed there and runs.
	if out, err := kubectl(t, c, "label", "node", "n2", "disk=ssd"); err != nil {
		t.Fatalf("label node: %v\n%s", err, out)
	}
	p := waitPod(t, cs, "default", "picky", 60*time.Second, "Running on n2", func(p *corev1.Pod) bool {
		return p.Spec.NodeName == "n2" && p.Status.Phase == corev1.PodRunning
	})
	if condition(p, corev1.PodScheduled) != corev1.ConditionTrue {
		t.Errorf("picky: PodScheduled %s", condition(p, corev1.PodScheduled))
	}
}

// TestDaemonSetAndStatefulSet: a DaemonSet runs one pod on every node; a
// StatefulSet starts its pods in order with stable names and local
// volumes, and a deleted pod comes back with the same name, on the same
// node, with its data.
func TestDaemonSetAndStatefulSet(t *testing.T) {
	c := newCluster(t, 3)
	importImages(t, c, "n1")
	cs := clientset(t, c)
	ctx := context.Background()
	labels := map[string]string{"app": "agent"}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "agent"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: busyboxPod("x", "", corev1.RestartPolicyAlways, "trap 'exit 0' TERM; sleep 3600 & wait").Spec},
		},
	}
	if _, err := cs.AppsV1().DaemonSets("default").Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if out, err := kubectl(t, c, "rollout", "status", "daemonset/agent", "--timeout=120s"); err != nil {
		t.Fatalf("rollout status daemonset: %v\n%s", err, out)
	}
	pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=agent"})
	if err != nil {
		t.Fatal(err)
	}
	perNode := map[string]int{}
	for _, p := range pods.Items {
		perNode[p.Spec.NodeName]++
	}
	if len(perNode) != 3 || perNode["n1"] != 1 || perNode["n2"] != 1 || perNode["n3"] != 1 {
		t.Errorf("DaemonSet pods per node: %v", perNode)
	}

	slabels := map[string]string{"app": "db"}
	replicas := int32(3)
	tmpl := busyboxPod("x", "", corev1.RestartPolicyAlways, `[ -f /data/id ] || echo "$(hostname) $(date +%s%N)" > /data/id; trap 'exit 0' TERM; sleep 3600 & wait`)
	tmpl.Spec.TerminationGracePeriodSeconds = ptr(int64(1))
	tmpl.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	ss := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "db"},
		Spec: appsv1.StatefulSetSpec{
			Replicas: &replicas, ServiceName: "db",
			Selector: &metav1.LabelSelector{MatchLabels: slabels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: slabels}, Spec: tmpl.Spec},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{
				ObjectMeta: metav1.ObjectMeta{Name: "data"},
				Spec: corev1.PersistentVolumeClaimSpec{
					AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: mustQuantity("1Gi")}},
				},
			}},
		},
	}
	if _, err := cs.AppsV1().StatefulSets("default").Create(ctx, ss, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if out, err := kubectl(t, c, "rollout", "status", "statefulset/db", "--timeout=180s"); err != nil {
		t.Fatalf("rollout status statefulset: %v\n%s", err, out)
	}
	started := map[string]time.Time{}
	for i := range 3 {
		name := fmt.Sprintf("db-%d", i)
		p := waitPod(t, cs, "default", name, 30*time.Second, "Running", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
		started[name] = p.Status.StartTime.Time
		if p.Spec.Hostname != name || p.Spec.Subdomain != "db" {
			t.Errorf("%s: hostname %q subdomain %q", name, p.Spec.Hostname, p.Spec.Subdomain)
		}
	}
	if started["db-1"].Before(started["db-0"]) || started["db-2"].Before(started["db-1"]) {
		t.Errorf("the StatefulSet's pods did not start in order: %v", started)
	}
	before, err := cs.CoreV1().Pods("default").Get(ctx, "db-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	id, _, err := kubectlAt(t, c, "32", nil, time.Minute, "exec", "db-1", "--", "cat", "/data/id")
	if err != nil || !strings.HasPrefix(id, "db-1 ") {
		t.Fatalf("db-1's data: %q %v", id, err)
	}
	if err := cs.CoreV1().Pods("default").Delete(ctx, "db-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	after := waitPod(t, cs, "default", "db-1", 90*time.Second, "back and Running", func(p *corev1.Pod) bool {
		return p.UID != before.UID && p.Status.Phase == corev1.PodRunning
	})
	if after.Spec.NodeName != before.Spec.NodeName {
		t.Errorf("db-1 moved from %s to %s: its local volume is on %s", before.Spec.NodeName, after.Spec.NodeName, before.Spec.NodeName)
	}
	eventually(t, 20*time.Second, func() error {
		again, _, err := kubectlAt(t, c, "32", nil, time.Minute, "exec", "db-1", "--", "cat", "/data/id")
		if err != nil || again != id {
			return fmt.Errorf("db-1's data after the restart: %q (%v), want %q", again, err, id)
		}
		return nil
	})
}

// TestLeaderKillMidRollout: kill -9 of the leader in the middle of a
// rolling update; the new leader finishes the rollout from the replica,
// with no ReplicaSet or pod made twice.
func TestLeaderKillMidRollout(t *testing.T) {
	c := newCluster(t, 3)
	for _, n := range []string{"n1", "n2", "n3"} {
		importImages(t, c, n)
	}
	leader := waitRoles(t, c, "n1", 3, 0, time.Minute)
	var via string
	for _, n := range []string{"n1", "n2", "n3"} {
		if n != leader {
			via = n
			break
		}
	}
	cs := clientsetFor(t, c, via)
	ctx := context.Background()
	replicas := int32(6)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec:       echoPod("x", "").Spec,
			},
		},
	}
	dep.Spec.Template.Spec.TerminationGracePeriodSeconds = ptr(int64(1))
	// Slow the rollout down so that the kill lands in its middle.
	dep.Spec.MinReadySeconds = 2
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitDeployment(t, cs, "web", 1, 120*time.Second)
	d, err := cs.AppsV1().Deployments("default").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d.Spec.Template.Spec.Containers[0].Env = append(d.Spec.Template.Spec.Containers[0].Env, corev1.EnvVar{Name: "VERSION", Value: "2"})
	if _, err := cs.AppsV1().Deployments("default").Update(ctx, d, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, func() error {
		d, err := cs.AppsV1().Deployments("default").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if d.Status.UpdatedReplicas < 2 {
			return fmt.Errorf("%d updated replicas", d.Status.UpdatedReplicas)
		}
		return nil
	})
	t.Logf("killing the leader %s mid-rollout", leader)
	if err := c.Kill(leader); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	if err := c.Start(leader); err != nil {
		t.Fatal(err)
	}
	waitDeployment(t, cs, "web", 2, 180*time.Second)
	rs, err := cs.AppsV1().ReplicaSets("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs.Items) != 2 {
		t.Errorf("%d ReplicaSets after the rollout, want 2 (old and new)", len(rs.Items))
	}
	if got := envOfPods(t, cs, "VERSION"); got != "2" {
		t.Errorf("after the rollout the pods run VERSION=%q", got)
	}
	pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil {
		t.Fatal(err)
	}
	live := 0
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			live++
		}
	}
	if live != int(replicas) {
		t.Errorf("%d live pods after the rollout, want %d", live, replicas)
	}
}

// waitDeployment waits until a Deployment is fully rolled out at
// generation ≥ gen (what kubectl rollout status checks).
func waitDeployment(t *testing.T, cs kubernetes.Interface, name string, gen int64, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, func() error {
		d, err := cs.AppsV1().Deployments("default").Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		r := *d.Spec.Replicas
		s := d.Status
		if d.Generation < gen || s.ObservedGeneration < d.Generation || s.UpdatedReplicas != r || s.Replicas != r || s.AvailableReplicas != r {
			return fmt.Errorf("deployment %s: generation %d observed %d, replicas %d updated %d available %d (want %d)",
				name, d.Generation, s.ObservedGeneration, s.Replicas, s.UpdatedReplicas, s.AvailableReplicas, r)
		}
		return nil
	})
}

// TestWorkerNodeKill: kill -9 of a worker node's agent — gossip declares
// it dead, the leader taints it unreachable and evicts its pods after their
// default toleration, and the Deployment runs all its replicas on the other
// nodes.
func TestWorkerNodeKill(t *testing.T) {
	c := newCluster(t, 3)
	importImages(t, c, "n1")
	leader := waitRoles(t, c, "n1", 3, 0, time.Minute)
	victim := "n3"
	if leader == victim {
		victim = "n2"
	}
	var via string
	for _, n := range []string{"n1", "n2", "n3"} {
		if n != victim {
			via = n
			break
		}
	}
	cs := clientsetFor(t, c, via)
	ctx := context.Background()
	replicas := int32(6)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}}, Spec: echoPod("x", "").Spec},
		},
	}
	dep.Spec.Template.Spec.TerminationGracePeriodSeconds = ptr(int64(1))
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitDeployment(t, cs, "web", 1, 120*time.Second)
	start := time.Now()
	if err := c.Kill(victim); err != nil {
		t.Fatal(err)
	}
	eventually(t, 90*time.Second, func() error {
		pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			return err
		}
		ready := 0
		for _, p := range pods.Items {
			if p.Spec.NodeName != victim && p.DeletionTimestamp == nil && podReady(&p) {
				ready++
			}
		}
		if ready < int(replicas) {
			return fmt.Errorf("%d of %d replicas ready away from %s", ready, replicas, victim)
		}
		return nil
	})
	t.Logf("node %s killed: all %d replicas ready on the other nodes after %s", victim, replicas, time.Since(start).Round(100*time.Millisecond))
	n, err := cs.CoreV1().Nodes().Get(ctx, victim, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tainted := false
	for _, tn := range n.Spec.Taints {
		tainted = tainted || tn.Key == corev1.TaintNodeUnreachable && tn.Effect == corev1.TaintEffectNoExecute
	}
	if !tainted {
		t.Errorf("%s is not tainted unreachable: %+v", victim, n.Spec.Taints)
	}
}
