package main

// Issue 4's benchmarks (-sched, -sched-only, -nodekill-only):
//
//   - scheduling throughput with hollow nodes: on a fresh 3-node cluster
//     (real nodes cordoned), -sched-nodes Node objects with no agent behind
//     them (annotation shoal.dev/hollow: "true", which membership leaves
//     alone) and -sched-pods pods with no nodeName; a watch timestamps each
//     pod's binding (spec.nodeName set);
//   - the leader agent's RSS with those pods stored, and the size and
//     persist time of the raft snapshot the leader takes afterwards (the
//     cluster runs with --raft-snapshot-threshold 1024 and
//     --raft-snapshot-interval 5s, so it also snapshots during the run; the directory name of
//     a hashicorp/raft file snapshot carries its start time in ms, and its
//     meta.json is written last, when the snapshot completes);
//   - node kill -9 → a Deployment's 6 replicas Ready on the other nodes,
//     with the default pod toleration and with --default-toleration-seconds=1,
//     after a 30 s idle window that counts false evictions.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/shoal-dev/shoal/e2e/images"
	"github.com/shoal-dev/shoal/node/localcluster"
)

var (
	schedNodes     = 5000
	schedPods      = 50000
	nodeKillRounds = 10
)

const (
	hollowAnnotation = "shoal.dev/hollow" // bench-only: membership leaves these Nodes alone
	schedNS          = "default"
	schedClusterNm   = "sbs-" // + pid in base 36
	killClusterNm    = "sbk-"
)

// runSchedOnly runs the scheduling and/or node-kill benchmarks and prints
// their table.
func runSchedOnly(bin string, sched, kill bool) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (network namespaces)")
	}
	var t table
	err := schedBenches(context.Background(), bin, &t, sched, kill)
	if perr := t.print(); perr != nil {
		err = errors.Join(err, perr)
	}
	return err
}

// runSchedBenches adds all of this file's rows to t (make bench).
func runSchedBenches(ctx context.Context, bin string, t *table) error {
	return schedBenches(ctx, bin, t, true, true)
}

func schedBenches(ctx context.Context, bin string, t *table, sched, kill bool) error {
	var errs []error
	if sched {
		if err := runSched(ctx, bin, t); err != nil {
			first, _, _ := strings.Cut(err.Error(), "\n")
			t.add("scheduling benchmarks", "failed: "+first, "")
			errs = append(errs, err)
		}
	}
	if kill {
		for _, tol := range []int{0, 1} {
			if err := runNodeKill(ctx, bin, tol, t); err != nil {
				first, _, _ := strings.Cut(err.Error(), "\n")
				t.add(fmt.Sprintf("node kill (toleration %s)", tolName(tol)), "failed: "+first, "")
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func tolName(tol int) string {
	if tol == 0 {
		return "default 2 s"
	}
	return fmt.Sprintf("%d s", tol)
}

// clientFor returns a clientset talking to node ip's API (the admin
// kubeconfig's credentials), with the given request timeout (0: none).
func clientFor(c *localcluster.Cluster, ip string, timeout time.Duration) (kubernetes.Interface, error) {
	cfg, err := restConfig(c)
	if err != nil {
		return nil, err
	}
	cfg = rest.CopyConfig(cfg)
	cfg.Host = "https://" + ip + ":6443"
	cfg.Timeout = timeout
	return kubernetes.NewForConfig(cfg)
}

func startCluster(ctx context.Context, bin, prefix string, args []string) (*localcluster.Cluster, string, func(), error) {
	return startClusterN(ctx, bin, prefix, 3, args)
}

// startClusterN starts a cluster of n nodes for a benchmark.
func startClusterN(ctx context.Context, bin, prefix string, n int, args []string) (*localcluster.Cluster, string, func(), error) {
	bin, _ = filepath.Abs(bin)
	dir, err := os.MkdirTemp("", "shoal-bench-"+prefix)
	if err != nil {
		return nil, "", nil, err
	}
	c, err := localcluster.Up(ctx, localcluster.Config{Name: prefix + strconv.FormatInt(int64(os.Getpid()), 36), Dir: filepath.Join(dir, "c"), Nodes: n, Binary: bin, Stdout: os.Stderr,
		AgentArgs: append(slices.Clone([]string(agentArgs)), args...)})
	if err != nil {
		os.RemoveAll(dir)
		return nil, "", nil, err
	}
	down := func() {
		if derr := c.Down(); derr != nil {
			fmt.Fprintln(os.Stderr, "bench: cluster down:", derr)
		}
		os.RemoveAll(dir)
	}
	return c, dir, down, nil
}

func failLogs(c *localcluster.Cluster, err error) {
	if err == nil {
		return
	}
	fmt.Fprintf(os.Stderr, "benchmark failed: %v\n", err)
	for _, n := range c.Nodes() {
		fmt.Fprintf(os.Stderr, "--- %s agent log, last 25 lines:\n%s\n", n.Name, tail(n.LogPath, 25))
	}
}

// ---- scheduling throughput ----

func hollowNode(i int) *corev1.Node {
	name := fmt.Sprintf("hollow-%04d", i)
	rl := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("32"),
		corev1.ResourceMemory: resource.MustParse("128Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	now := metav1.Now()
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Annotations: map[string]string{hollowAnnotation: "true"},
			Labels: map[string]string{
				"kubernetes.io/hostname":      name,
				"kubernetes.io/os":            "linux",
				"topology.kubernetes.io/zone": fmt.Sprintf("zone-%d", i%10),
			},
		},
		Status: corev1.NodeStatus{
			Capacity:    rl,
			Allocatable: rl,
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "Hollow",
				Message: "bench hollow node", LastHeartbeatTime: now, LastTransitionTime: now}},
		},
	}
}

func schedPod(i int) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("sched-%d", i), Labels: map[string]string{"app": "sched-bench"}},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name:  "main",
				Image: images.BusyboxRef,
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
					corev1.ResourceCPU:    resource.MustParse("10m"),
					corev1.ResourceMemory: resource.MustParse("16Mi"),
				}},
			}},
		},
	}
}

func runSched(ctx context.Context, bin string, t *table) (err error) {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, _, down, err := startCluster(ctx, bin, schedClusterNm, []string{"--raft-snapshot-threshold", "1024", "--raft-snapshot-interval", "5s"})
	if err != nil {
		return err
	}
	defer down()
	defer func() { failLogs(c, err) }()
	hc, err := c.HTTPClient()
	if err != nil {
		return err
	}
	leader, _, err := roles(ctx, c, hc)
	if err != nil {
		return err
	}
	ln, _ := c.Node(leader)
	cs, err := clientFor(c, ln.IP, 30*time.Second)
	if err != nil {
		return err
	}
	wcs, err := clientFor(c, ln.IP, 0)
	if err != nil {
		return err
	}
	// Cordon the real nodes: the pods go to hollow nodes only.
	for _, n := range c.Nodes() {
		if _, err := cs.CoreV1().Nodes().Patch(ctx, n.Name, types.MergePatchType, []byte(`{"spec":{"unschedulable":true}}`), metav1.PatchOptions{}); err != nil {
			return fmt.Errorf("cordon %s: %w", n.Name, err)
		}
	}

	nstart := time.Now()
	err = parallel(schedNodes, 32, func(i int) error {
		n := hollowNode(i)
		st := n.Status
		got, err := retried(func() (*corev1.Node, error) { return cs.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}) })
		if apierrors.IsAlreadyExists(err) { // an earlier try committed after all
			got, err = cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		}
		if err != nil {
			return fmt.Errorf("create node %s: %w", n.Name, err)
		}
		if c := readyOf(got); c == nil || c.Status != corev1.ConditionTrue || got.Status.Allocatable.Pods().Value() != 110 {
			got.Status = st
			if _, err := retried(func() (*corev1.Node, error) {
				return cs.CoreV1().Nodes().UpdateStatus(ctx, got, metav1.UpdateOptions{})
			}); err != nil {
				return fmt.Errorf("node %s status: %w", n.Name, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	nwall := time.Since(nstart)
	t.add(fmt.Sprintf("sched: register %d hollow nodes (32 workers, create + status)", schedNodes), fmt.Sprintf("%s (%.0f nodes/s); raft leader %s", secs(nwall), float64(schedNodes)/nwall.Seconds(), leader), "")
	// Let the scheduler see them all Ready (and check membership left them alone).
	time.Sleep(3 * time.Second)
	nl, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	ready := 0
	for i := range nl.Items {
		if c := readyOf(&nl.Items[i]); c != nil && c.Status == corev1.ConditionTrue && nl.Items[i].Annotations[hollowAnnotation] == "true" && len(nl.Items[i].Spec.Taints) == 0 {
			ready++
		}
	}
	if ready != schedNodes {
		return fmt.Errorf("%d of %d hollow nodes Ready and untainted", ready, schedNodes)
	}

	// The watch: bound[i] is when pod i was first seen with a nodeName.
	live := schedPods / 5 // pods of the second phase
	total := schedPods + live
	createT := make([]atomic.Int64, total)
	bound := make([]atomic.Int64, total)
	var nbound atomic.Int64
	queuedBound, allBound := make(chan struct{}), make(chan struct{})
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	wready := make(chan struct{})
	go watchPods(wctx, wcs.CoreV1().Pods(schedNS), "app=sched-bench", wready, func(typ watch.EventType, p *corev1.Pod, now time.Time) {
		if p.Spec.NodeName == "" {
			return
		}
		i, err := strconv.Atoi(strings.TrimPrefix(p.Name, "sched-"))
		if err != nil || i < 0 || i >= total {
			return
		}
		if bound[i].CompareAndSwap(0, now.UnixNano()) {
			switch nbound.Add(1) {
			case int64(schedPods):
				close(queuedBound)
			case int64(total):
				close(allBound)
			}
		}
	}, nil)
	select {
	case <-wready:
	case <-time.After(30 * time.Second):
		return errors.New("pod watch: no list after 30 s")
	}
	create := func(from, to int) (wall time.Duration, retries int64, err error) {
		start := time.Now()
		var createErrs, lastCreate atomic.Int64
		err = parallel(to-from, 32, func(j int) error {
			i := from + j
			t0 := time.Now()
			createT[i].Store(t0.UnixNano())
			for try := 0; ; try++ {
				_, err := cs.CoreV1().Pods(schedNS).Create(ctx, schedPod(i), metav1.CreateOptions{})
				if err == nil || apierrors.IsAlreadyExists(err) {
					break
				}
				createErrs.Add(1)
				if try == 3 {
					return fmt.Errorf("create pod %d: %w", i, err)
				}
				time.Sleep(100 * time.Millisecond)
			}
			for {
				l := lastCreate.Load()
				now := time.Now().UnixNano()
				if now <= l || lastCreate.CompareAndSwap(l, now) {
					break
				}
			}
			return nil
		})
		return time.Duration(lastCreate.Load() - start.UnixNano()), createErrs.Load(), err
	}
	wait := func(ch chan struct{}, want int) error {
		select {
		case <-ch:
			return nil
		case <-time.After(5 * time.Minute):
			return fmt.Errorf("%d of %d pods bound after 5 min", nbound.Load(), want)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	// steady is the binding rate between the 10th and the 90th percentile
	// binding of pods [from, to).
	times := func(from, to int) (bts []int64, lats []time.Duration) {
		for i := from; i < to; i++ {
			bts = append(bts, bound[i].Load())
			lats = append(lats, time.Duration(bound[i].Load()-createT[i].Load()))
		}
		slices.Sort(bts)
		slices.Sort(lats)
		return bts, lats
	}
	steady := func(bts []int64) float64 {
		lo, hi := len(bts)/10, len(bts)*9/10
		return float64(hi-lo) / (float64(bts[hi]-bts[lo]) / 1e9)
	}

	// Phase 1, the scheduler alone: pods queue while it is paused
	// (kube-system/shoal-scheduler paused: "true"), then it places them all.
	cfg := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "shoal-scheduler"}, Data: map[string]string{"paused": "true"}}
	if cfg, err = cs.CoreV1().ConfigMaps("kube-system").Create(ctx, cfg, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("pausing the scheduler: %w", err)
	}
	createWall, retries, err := create(0, schedPods)
	if err != nil {
		return err
	}
	if n := nbound.Load(); n != 0 {
		return fmt.Errorf("%d pods bound while the scheduler was paused", n)
	}
	cfg.Data["paused"] = "false"
	const bindings = "shoal_scheduler_bindings_total"
	base, merr := metricValue(ctx, hc, ln.IP, bindings)
	for try := 0; merr != nil && try < 5; try++ {
		time.Sleep(time.Second)
		base, merr = metricValue(ctx, hc, ln.IP, bindings)
	}
	resume := time.Now()
	if _, err := cs.CoreV1().ConfigMaps("kube-system").Update(ctx, cfg, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("resuming the scheduler: %w", err)
	}
	// Committed: the leader's count of bindings it committed, polled.
	var committed time.Duration
	for merr == nil && time.Since(resume) < 5*time.Minute {
		v, err := metricValue(ctx, hc, ln.IP, bindings)
		if err == nil && v >= base+float64(schedPods) {
			committed = time.Since(resume)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if merr == nil && committed == 0 {
		merr = errors.New("the leader did not count them all within 5 min")
	}
	if err := wait(queuedBound, schedPods); err != nil {
		return err
	}
	bts, _ := times(0, schedPods)
	wall := time.Duration(bts[len(bts)-1] - resume.UnixNano())
	firstBind := time.Duration(bts[0] - resume.UnixNano())
	t.add(fmt.Sprintf("sched: create %d pods (32 workers) via leader, scheduler paused", schedPods),
		fmt.Sprintf("%s  %.0f creates/s  (retried errors %d)", secs(createWall), float64(schedPods)/createWall.Seconds(), retries), "API write rate ~3,000/s here")
	if committed > 0 {
		t.add(fmt.Sprintf("sched: %d queued pods on %d hollow nodes: resume → last binding committed (leader's %s)", schedPods, schedNodes, bindings),
			fmt.Sprintf("%s  %.0f pods/s bound and committed", secs(committed), float64(schedPods)/committed.Seconds()), "≥ 5,000 pods/s (kube-scheduler CI 680–810/s)")
	} else {
		t.add("sched: resume → last binding committed (leader metric)", "not measured: "+merr.Error(), "")
	}
	t.add(fmt.Sprintf("sched: %d queued pods: resume → last binding seen by a client's watch", schedPods),
		fmt.Sprintf("%s  %.0f pods/s (first after %s; steady window, 10th → 90th percentile: %.0f pods/s)", secs(wall), float64(schedPods)/wall.Seconds(), ms(firstBind), steady(bts)), "")

	// Phase 2, scheduling while pods are created: what a user sees.
	createWall, retries, err = create(schedPods, total)
	if err != nil {
		return err
	}
	if err := wait(allBound, total); err != nil {
		return err
	}
	bts, lats := times(schedPods, total)
	wall = time.Duration(bts[len(bts)-1] - createT[schedPods].Load())
	t.add(fmt.Sprintf("sched: %d more pods created (32 workers, %.0f creates/s) while scheduling: first create → last bound", live, float64(live)/createWall.Seconds()),
		fmt.Sprintf("%s  %.0f pods/s bound", secs(wall), float64(live)/wall.Seconds()), "bounded by the create rate")
	t.add("sched: per-pod create → bound while creating (watch)", fmt.Sprintf("p50 %s  p99 %s", ms(pct(lats, 50)), ms(pct(lats, 99))), "")
	schedPods = total // what the leader now stores
	wcancel()

	// Leader memory and a snapshot with the pods stored.
	time.Sleep(3 * time.Second)
	if l2, _, err := roles(ctx, c, hc); err == nil {
		leader = l2
		ln, _ = c.Node(leader)
	}
	// The leader snapshots once --raft-snapshot-threshold raft entries
	// follow the last snapshot (entries are batches of writes): write small
	// ConfigMaps from one client until a snapshot started after the run
	// completes, so it holds every pod.
	after := time.Now()
	t.add(fmt.Sprintf("leader agent RSS with %d pods + %d nodes stored", schedPods, schedNodes), mib(rssBytes(ln.PID)), "")
	var (
		size int64
		took time.Duration
		idx  uint64
	)
	err = errors.New("no snapshot within 90 s")
	for i := 0; time.Since(after) < 90*time.Second; i++ {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("snap-fill-%d", i)}}
		if _, cerr := cs.CoreV1().ConfigMaps(schedNS).Create(ctx, cm, metav1.CreateOptions{}); cerr != nil {
			err = fmt.Errorf("snapshot filler: %w", cerr)
			break
		}
		if i%64 == 0 {
			if size, took, idx, err = waitSnapshot(ctx, ln.DataDir, after, 0); err == nil {
				break
			}
		}
	}
	if err != nil {
		t.add("leader raft snapshot with the pods stored", "not measured: "+err.Error(), "")
	} else {
		t.add(fmt.Sprintf("leader raft snapshot with %d pods + %d nodes stored (raft index %d)", schedPods, schedNodes, idx),
			fmt.Sprintf("%s written in %s (store → file; FSM capture excluded)", mib(size), ms(took)), "")
	}
	return nil
}

// retried calls f until it succeeds, fails for good or has failed 4 times:
// a write whose outcome was unknown (leadership changed under a loaded
// machine) or that found no leader is tried again, as a client would.
func retried[T any](f func() (T, error)) (T, error) {
	for try := 0; ; try++ {
		v, err := f()
		if err == nil || try == 3 || !(apierrors.IsServiceUnavailable(err) || apierrors.IsInternalError(err) || apierrors.IsTimeout(err) || apierrors.IsServerTimeout(err)) {
			return v, err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func readyOf(n *corev1.Node) *corev1.NodeCondition {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == corev1.NodeReady {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

// waitSnapshot waits for a completed hashicorp/raft file snapshot in
// dataDir started after since: its directory is <term>-<index>-<unix ms at
// start>, and meta.json is rewritten when it completes.
func waitSnapshot(ctx context.Context, dataDir string, since time.Time, timeout time.Duration) (size int64, took time.Duration, index uint64, err error) {
	deadline := time.Now().Add(timeout)
	for first := true; first || time.Now().Before(deadline); first = false {
		var found bool
		_ = filepath.WalkDir(dataDir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || found {
				return nil
			}
			if d.IsDir() && (d.Name() == "agent" || d.Name() == "containerd") {
				return filepath.SkipDir
			}
			if !d.IsDir() || filepath.Base(filepath.Dir(path)) != "snapshots" || strings.HasSuffix(d.Name(), ".tmp") {
				return nil
			}
			parts := strings.Split(d.Name(), "-")
			if len(parts) != 3 {
				return nil
			}
			msec, err1 := strconv.ParseInt(parts[2], 10, 64)
			idx, err2 := strconv.ParseUint(parts[1], 10, 64)
			if err1 != nil || err2 != nil || time.UnixMilli(msec).Before(since) {
				return filepath.SkipDir
			}
			mi, err := os.Stat(filepath.Join(path, "meta.json"))
			si, err2 := os.Stat(filepath.Join(path, "state.bin"))
			if err != nil || err2 != nil {
				return filepath.SkipDir
			}
			size, took, index, found = si.Size(), mi.ModTime().Sub(time.UnixMilli(msec)), idx, true
			return filepath.SkipDir
		})
		if found {
			return size, took, index, nil
		}
		select {
		case <-ctx.Done():
			return 0, 0, 0, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return 0, 0, 0, fmt.Errorf("no snapshot within %s", timeout)
}

// watchPods lists, then watches pods matching selector from the list's
// resource version, re-watching when the stream ends and relisting when the
// version is too old, calling f for each object seen. After each list,
// relisted (if set) gets the names listed, when the list was asked for and
// when it came. ready is closed after the first list.
func watchPods(ctx context.Context, pods interface {
	List(context.Context, metav1.ListOptions) (*corev1.PodList, error)
	Watch(context.Context, metav1.ListOptions) (watch.Interface, error)
}, selector string, ready chan struct{}, f func(watch.EventType, *corev1.Pod, time.Time),
	relisted func(present map[string]bool, listed, now time.Time)) {
	rv := ""
	for ctx.Err() == nil {
		if rv == "" {
			listed := time.Now()
			l, err := pods.List(ctx, metav1.ListOptions{LabelSelector: selector})
			if err != nil {
				time.Sleep(200 * time.Millisecond)
				continue
			}
			now := time.Now()
			present := map[string]bool{}
			for i := range l.Items {
				present[l.Items[i].Name] = true
				f(watch.Modified, &l.Items[i], now)
			}
			if relisted != nil {
				relisted(present, listed, now)
			}
			rv = l.ResourceVersion
			if ready != nil {
				close(ready)
				ready = nil
			}
		}
		wi, err := pods.Watch(ctx, metav1.ListOptions{LabelSelector: selector, ResourceVersion: rv, AllowWatchBookmarks: true})
		if err != nil {
			if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
				rv = ""
			}
			time.Sleep(100 * time.Millisecond)
			continue
		}
		for ev := range wi.ResultChan() {
			now := time.Now()
			switch ev.Type {
			case watch.Error:
				if st := apierrors.FromObject(ev.Object); apierrors.IsResourceExpired(st) || apierrors.IsGone(st) {
					rv = ""
				}
			case watch.Bookmark:
				if a, err := meta.Accessor(ev.Object); err == nil {
					rv = a.GetResourceVersion()
				}
			default:
				if p, ok := ev.Object.(*corev1.Pod); ok {
					rv = p.ResourceVersion
					f(ev.Type, p, now)
				}
			}
			if rv == "" {
				break
			}
		}
		wi.Stop()
	}
}

// ---- node kill ----

const killApp = "kill-bench"

func killDeployment() *appsv1.Deployment {
	one, six := int64(1), int32(6)
	lbl := map[string]string{"app": killApp}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: killApp},
		Spec: appsv1.DeploymentSpec{
			Replicas: &six,
			Selector: &metav1.LabelSelector{MatchLabels: lbl},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: lbl},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: &one,
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: "kubernetes.io/hostname",
						WhenUnsatisfiable: corev1.ScheduleAnyway, LabelSelector: &metav1.LabelSelector{MatchLabels: lbl}}},
					Containers: []corev1.Container{{Name: "main", Image: images.BusyboxRef, Command: []string{"sleep", "3600"}}},
				},
			},
		},
	}
}

// killState is what the watch knows of the Deployment's pods.
type killState struct {
	mu      sync.Mutex
	pods    map[string]*corev1.Pod
	deletes int // DELETED events and deletionTimestamps first seen
	changed chan struct{}
}

func (k *killState) observe(typ watch.EventType, p *corev1.Pod, _ time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	prev := k.pods[p.Name]
	if typ == watch.Deleted {
		if prev != nil && prev.DeletionTimestamp == nil {
			k.deletes++
		}
		delete(k.pods, p.Name)
	} else {
		if p.DeletionTimestamp != nil && (prev == nil || prev.DeletionTimestamp == nil) {
			k.deletes++
		}
		k.pods[p.Name] = p.DeepCopy()
	}
	close(k.changed)
	k.changed = make(chan struct{})
}

// readyOn counts Ready pods not being deleted, not on node skip; perNode
// counts them by node.
func (k *killState) readyOn(skip string) (n int, perNode map[string]int, ch chan struct{}) {
	k.mu.Lock()
	defer k.mu.Unlock()
	perNode = map[string]int{}
	for _, p := range k.pods {
		if p.DeletionTimestamp != nil || p.Spec.NodeName == "" || p.Spec.NodeName == skip {
			continue
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				n++
				perNode[p.Spec.NodeName]++
			}
		}
	}
	return n, perNode, k.changed
}

// settled: exactly 6 pods exist, all Ready, none deleting.
func (k *killState) settled() bool {
	n, _, _ := k.readyOn("")
	k.mu.Lock()
	defer k.mu.Unlock()
	return n == 6 && len(k.pods) == 6
}

func (k *killState) waitFor(ctx context.Context, timeout time.Duration, cond func() bool) error {
	deadline := time.After(timeout)
	for {
		k.mu.Lock()
		ch := k.changed
		k.mu.Unlock()
		if cond() {
			return nil
		}
		select {
		case <-ch:
		case <-time.After(200 * time.Millisecond):
		case <-deadline:
			return fmt.Errorf("not reached after %s", timeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func runNodeKill(ctx context.Context, bin string, tol int, t *table) (err error) {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	var args []string
	if tol > 0 {
		args = []string{fmt.Sprintf("--default-toleration-seconds=%d", tol)}
	}
	c, dir, down, err := startCluster(ctx, bin, killClusterNm, args)
	if err != nil {
		return err
	}
	defer down()
	defer func() { failLogs(c, err) }()

	archive := filepath.Join(dir, "busybox.tar")
	f, err := os.Create(archive)
	if err != nil {
		return err
	}
	err = images.Busybox(f, images.BusyboxRef)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	n1, _ := c.Node(timedNode)
	ictx, icancel := context.WithTimeout(ctx, 2*time.Minute)
	out, err := c.NodeCommand(ictx, timedNode, bin, "image", "import", archive, "--data-dir", n1.DataDir).CombinedOutput()
	icancel()
	if err != nil {
		return fmt.Errorf("shoal image import on %s: %v\n%s", timedNode, err, out)
	}
	hc, err := c.HTTPClient()
	if err != nil {
		return err
	}
	leader, _, err := roles(ctx, c, hc)
	if err != nil {
		return err
	}
	ln, _ := c.Node(leader)
	// The clients talk to the leader, which is never killed.
	cs, err := clientFor(c, ln.IP, 30*time.Second)
	if err != nil {
		return err
	}
	wcs, err := clientFor(c, ln.IP, 0)
	if err != nil {
		return err
	}
	k := &killState{pods: map[string]*corev1.Pod{}, changed: make(chan struct{})}
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	wready := make(chan struct{})
	go watchPods(wctx, wcs.CoreV1().Pods(schedNS), "app="+killApp, wready, k.observe, nil)
	select {
	case <-wready:
	case <-time.After(30 * time.Second):
		return errors.New("pod watch: no list after 30 s")
	}
	if _, err := cs.AppsV1().Deployments(schedNS).Create(ctx, killDeployment(), metav1.CreateOptions{}); err != nil {
		return err
	}
	if err := k.waitFor(ctx, 3*time.Minute, k.settled); err != nil {
		return fmt.Errorf("deployment available: %w", err)
	}
	row := fmt.Sprintf("node kill (toleration %s)", tolName(tol))

	// False evictions at idle.
	k.mu.Lock()
	d0 := k.deletes
	k.mu.Unlock()
	time.Sleep(30 * time.Second)
	k.mu.Lock()
	idleDeletes := k.deletes - d0
	k.mu.Unlock()
	t.add(row+": pod deletions in a 30 s idle window", strconv.Itoa(idleDeletes), "0: no false evictions")

	var took []time.Duration
	for i := 0; i < nodeKillRounds; i++ {
		if l, _, err := roles(ctx, c, hc); err == nil && l != leader {
			return fmt.Errorf("round %d: leader moved from %s to %s", i, leader, l)
		}
		_, per, _ := k.readyOn("")
		victim := ""
		for _, n := range c.Nodes() {
			if n.Name != leader && (victim == "" || per[n.Name] > per[victim]) {
				victim = n.Name
			}
		}
		if per[victim] == 0 {
			return fmt.Errorf("round %d: no deployment pod on a non-leader node (%v)", i, per)
		}
		start := time.Now()
		if err := c.Kill(victim); err != nil {
			return err
		}
		if err := k.waitFor(ctx, 2*time.Minute, func() bool { n, _, _ := k.readyOn(victim); return n >= 6 }); err != nil {
			return fmt.Errorf("round %d: 6 replicas Ready off %s: %w", i, victim, err)
		}
		d := time.Since(start)
		took = append(took, d)
		fmt.Fprintf(os.Stderr, "  %s: round %d killed %s (%d pods): %s\n", row, i, victim, per[victim], secs(d))
		if err := c.Start(victim); err != nil {
			return err
		}
		if err := c.WaitReady(ctx, victim); err != nil {
			return err
		}
		if err := k.waitFor(ctx, 2*time.Minute, k.settled); err != nil {
			return fmt.Errorf("round %d: settle: %w", i, err)
		}
		time.Sleep(2 * time.Second)
	}
	slices.Sort(took)
	t.add(fmt.Sprintf("%s: kill -9 non-leader → its Deployment pods Ready elsewhere (%d kills, 3 nodes, 6 replicas)", row, len(took)),
		fmt.Sprintf("p50 %s  p99 %s", secs(pct(took, 50)), secs(pct(took, 99))), "p99 ≤ 5 s")
	return nil
}
