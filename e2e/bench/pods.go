package main

// Pod benchmarks (-pods, -pods-only) on a fresh 3-node cluster whose
// busybox image is imported on n1 only:
//
//   - pod start: create → Running seen by a watch, 50 pods on n1 one at a
//     time, interleaved with a bare start of the same image on n1's own
//     containerd (through node/container/containerd, the runtime the agent
//     uses, with and without the agent's container-logger), and a breakdown
//     of where the pod start time goes: agent data-dir timestamps and
//     containerd events; then 50 pods created concurrently;
//   - teardown: delete → object gone (watch), the 50 pods one at a time;
//   - first pull from a peer → Running (a warm-up pod on n2 and n3);
//   - burst: 100 pods round-robin on the 3 nodes from 16 workers → all
//     Running;
//   - the n1 agent's RSS with 0 and with 100 pods.
//
// Pods are minimal: busybox `sleep 3600`, restartPolicy Always,
// terminationGracePeriodSeconds 0 (which the API server raises to 1 s for a
// pod running on a node, as Kubernetes does), no probes.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	eventsapi "github.com/containerd/containerd/api/events"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/shoal-dev/shoal/e2e/images"
	"github.com/shoal-dev/shoal/node/container"
	"github.com/shoal-dev/shoal/node/container/containerd"
	"github.com/shoal-dev/shoal/node/container/logfile"
	"github.com/shoal-dev/shoal/node/localcluster"
)

const (
	podNS         = "default"
	seqPods       = 50  // sequential starts (and teardowns) on n1
	concPods      = 50  // concurrent starts on n1
	burstPods     = 100 // across the three nodes
	rssPods       = 100 // on n1, for the RSS figure
	podWorkers    = 16
	podTimeout    = 2 * time.Minute // any single wait
	timedNode     = "n1"            // API, images and the timed pods
	podsClusterNm = "sbp-"          // + this process's pid in base 36: concurrent runs never share namespaces
)

// runPodsOnly runs the pod benchmarks alone and prints their table.
func runPodsOnly(bin string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (network namespaces)")
	}
	var t table
	if p50, p99, err := fdatasync(os.TempDir(), 500); err == nil {
		t.add("fdatasync 4k (this machine)", fmt.Sprintf("p50 %s  p99 %s", ms(p50), ms(p99)), "")
	}
	err := runPods(context.Background(), bin, &t)
	if perr := t.print(); err == nil {
		err = perr
	}
	return err
}

// runPods starts its own 3-node cluster, runs the pod benchmarks and adds
// their rows to t. The cluster is removed on every return path, and on
// SIGINT/SIGTERM (which cancel the run).
func runPods(ctx context.Context, bin string, t *table) (err error) {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	bin, _ = filepath.Abs(bin) // agents and image imports run it from other directories
	c, dir, down, err := startCluster(ctx, bin, podsClusterNm, nil)
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
	b, err := newPodBench(ctx, c, bin)
	if err != nil {
		return err
	}
	defer b.close()
	b.image = archive
	return b.run(ctx, t)
}

type podBench struct {
	c      *localcluster.Cluster
	bin    string
	image  string // the busybox archive
	cs     kubernetes.Interface
	w      *podWatch
	ev     *ctrEvents
	n1     localcluster.NodeInfo
	cancel context.CancelFunc
}

func newPodBench(ctx context.Context, c *localcluster.Cluster, bin string) (*podBench, error) {
	cfg, err := restConfig(c)
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	wcfg := rest.CopyConfig(cfg)
	wcfg.Timeout = 0 // the watch is long-lived
	wcs, err := kubernetes.NewForConfig(wcfg)
	if err != nil {
		return nil, err
	}
	n1, err := c.Node(timedNode)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(ctx)
	b := &podBench{c: c, bin: bin, cs: cs, n1: n1, cancel: cancel}
	b.w = newPodWatch(wcs, podNS)
	ready := make(chan struct{})
	go b.w.run(wctx, ready)
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		cancel()
		return nil, errors.New("pod watch: no list after 30 s")
	}
	return b, nil
}

func (b *podBench) close() {
	b.cancel()
	if b.ev != nil {
		b.ev.close()
	}
}

// restConfig is the e2e harness's: the admin kubeconfig (node 1's API),
// dialled from the lan namespace; no client-side throttling to speak of.
func restConfig(c *localcluster.Cluster) (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", c.KubeconfigPath())
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	cfg.Dial = c.DialContext
	cfg.Timeout = 30 * time.Second
	cfg.QPS, cfg.Burst = 5000, 5000
	return cfg, nil
}

func (b *podBench) run(ctx context.Context, t *table) error {
	c, n1 := b.c, b.n1
	ictx, icancel := context.WithTimeout(ctx, 2*time.Minute)
	out, err := c.NodeCommand(ictx, timedNode, b.bin, "image", "import", b.image, "--data-dir", n1.DataDir).CombinedOutput()
	icancel()
	if err != nil {
		return fmt.Errorf("shoal image import on %s: %v\n%s", timedNode, err, out)
	}
	leader := "?"
	hc, err := c.HTTPClient()
	if err != nil {
		return err
	}
	if l, _, err := roles(ctx, c, hc); err == nil {
		leader = l
	}
	termBefore := raftTerm(ctx, hc, c)
	t.add("pods: cluster", fmt.Sprintf("3 nodes; API, image import and timed pods on %s; raft leader %s", timedNode, leader), "")

	// RSS with no pods, once the agent has settled after the import.
	time.Sleep(3 * time.Second)
	ctrdPID := readPID(filepath.Join(n1.DataDir, "containerd", "containerd.pid"))
	rss0, ctrd0 := rssBytes(n1.PID), rssBytes(ctrdPID)

	// The bare runtimes and the event feed connect before any pod exists:
	// containerd.New adopts the namespace's running tasks, and these must
	// never follow the agent's containers.
	bare, err := openRuntime(ctx, n1, "")
	if err != nil {
		return fmt.Errorf("bare runtime on %s: %w", timedNode, err)
	}
	defer bare.Close()
	bareLog, err := openRuntime(ctx, n1, b.bin)
	if err != nil {
		return fmt.Errorf("bare runtime with logger on %s: %w", timedNode, err)
	}
	defer bareLog.Close()
	if b.ev, err = subscribeEvents(ctx, bare); err != nil {
		return err
	}

	// Warm-up: one pod per node, n1 first (its image is local); n2 and n3
	// pull from a peer. Then the timed runs measure starts, not pulls.
	warm := map[string]time.Duration{}
	for _, n := range []string{"n1", "n2", "n3"} {
		pt, err := b.create(ctx, "warm-"+n, n)
		if err != nil {
			return err
		}
		if err := b.w.waitRunning(ctx, []*podTimes{pt}, podTimeout); err != nil {
			return fmt.Errorf("warm-up pod on %s: %w", n, err)
		}
		warm[n] = pt.startLatency()
	}
	t.add("first pod on n1 (image local): create → Running", ms(warm["n1"]), "")
	t.add("P2P pull → Running (first pod on n2, n3; image on n1 only)", fmt.Sprintf("n2 %s  n3 %s", ms(warm["n2"]), ms(warm["n3"])), "")
	// One untimed bare cycle each, like the warm-up pod.
	for _, rt := range []*containerd.Runtime{bare, bareLog} {
		if _, err := bareStart(ctx, rt, n1, "bare-warm-"+strconv.FormatInt(time.Now().UnixNano()%1e6, 10)); err != nil {
			return err
		}
	}
	if err := b.deleteAll(ctx, b.w.named("warm-")); err != nil {
		return err
	}

	// Sequential starts on n1, each pod Running before the next is
	// created, interleaved with bare starts on the same containerd.
	var seq []*podTimes
	var bareSeq, bareLogSeq []bareTimes
	settle("sequential pod starts")
	for i := 0; i < seqPods; i++ {
		pt, err := b.create(ctx, fmt.Sprintf("seq-%d", i), timedNode)
		if err != nil {
			return err
		}
		if err := b.w.waitRunning(ctx, []*podTimes{pt}, podTimeout); err != nil {
			return err
		}
		pt.stampDirs(n1)
		seq = append(seq, pt)
		bt, err := bareStart(ctx, bare, n1, fmt.Sprintf("bare-%d", i))
		if err != nil {
			return err
		}
		bareSeq = append(bareSeq, bt)
		if bt, err = bareStart(ctx, bareLog, n1, fmt.Sprintf("bare-log-%d", i)); err != nil {
			return err
		}
		bareLogSeq = append(bareLogSeq, bt)
	}
	podP50, podP99 := pcts(mapDur(seq, (*podTimes).startLatency))
	bareP50, bareP99 := pcts(mapDur(bareSeq, bareTimes.total))
	blP50, blP99 := pcts(mapDur(bareLogSeq, bareTimes.total))
	t.add(fmt.Sprintf("pod start, sequential (%d on %s): create → Running (watch)", seqPods, timedNode),
		fmt.Sprintf("p50 %s  p99 %s", ms(podP50), ms(podP99)), "p50 ≤ 100 ms, p99 ≤ 250 ms")
	t.add(fmt.Sprintf("bare start on %s's containerd (%d, interleaved): create+start → Running", timedNode, seqPods),
		fmt.Sprintf("p50 %s  p99 %s", ms(bareP50), ms(bareP99)), "floor: runtime adapter, no logger, no pod network")
	t.add("  same, with the agent's container-logger", fmt.Sprintf("p50 %s  p99 %s", ms(blP50), ms(blP99)), "as the agent configures the runtime")
	t.add("pod start p50 / bare start p50", fmt.Sprintf("%.2f×", float64(podP50)/float64(max(bareP50, 1))), "≤ 1.5×")
	t.add("  pod start: create call → API response (committed on the leader)", pstr(mapDur(seq, func(pt *podTimes) time.Duration { return pt.created.Sub(pt.create) })), "")
	t.add("  pod start: create call → ADDED seen by the watch", pstr(mapDur(seq, func(pt *podTimes) time.Duration { return pt.added.Sub(pt.create) })), "")
	for _, s := range startStages(seq, b.ev) {
		t.add("  pod start: "+s.what, s.value, "")
	}
	for _, s := range []struct {
		what string
		f    func(bareTimes) time.Duration
	}{{"CreateContainer", func(x bareTimes) time.Duration { return x.create }}, {"StartContainer", func(x bareTimes) time.Duration { return x.start }}, {"Status", func(x bareTimes) time.Duration { return x.status }}} {
		p50, p99 := pcts(mapDur(bareSeq, s.f))
		l50, l99 := pcts(mapDur(bareLogSeq, s.f))
		t.add("  bare start: "+s.what, fmt.Sprintf("p50 %s  p99 %s  (with logger: p50 %s  p99 %s)", ms(p50), ms(p99), ms(l50), ms(l99)), "")
	}

	// Teardown of the same 50 pods, one at a time.
	for _, pt := range seq {
		if err := b.delete(ctx, pt); err != nil {
			return err
		}
		if err := b.w.waitDeleted(ctx, []*podTimes{pt}, podTimeout); err != nil {
			return err
		}
	}
	p50, p99 := pcts(mapDur(seq, (*podTimes).deleteLatency))
	t.add(fmt.Sprintf("pod teardown, sequential (%d): delete → gone (watch)", seqPods),
		fmt.Sprintf("p50 %s  p99 %s", ms(p50), ms(p99)), "grace 1 s (spec 0 → 1 s); sleep as PID 1 ignores SIGTERM")
	for _, s := range teardownStages(seq, b.ev) {
		t.add("  teardown: "+s.what, s.value, "")
	}

	// The same concurrency straight on n1's containerd, as the agent
	// configures it (with the logger): the floor for the concurrent pods.
	settle("concurrent bare starts")
	cpu0 := readCPU(n1.PID, ctrdPID)
	bstart := time.Now()
	bares := make([]bareTimes, concPods)
	err = parallel(concPods, podWorkers, func(i int) error {
		var err error
		bares[i], err = bareUp(ctx, bareLog, n1, fmt.Sprintf("bare-conc-%d", i))
		return err
	})
	bwall := time.Since(bstart)
	cpu1 := readCPU(n1.PID, ctrdPID)
	if rerr := parallel(concPods, podWorkers, func(i int) error { return bareRemove(ctx, bareLog, n1, fmt.Sprintf("bare-conc-%d", i)) }); err == nil {
		err = rerr
	}
	if err != nil {
		return err
	}
	p50, p99 = pcts(mapDur(bares, bareTimes.total))
	c50, _ := pcts(mapDur(bares, func(x bareTimes) time.Duration { return x.create }))
	s50, _ := pcts(mapDur(bares, func(x bareTimes) time.Duration { return x.start }))
	t.add(fmt.Sprintf("bare start with logger, concurrent (%d, %d workers)", concPods, podWorkers),
		fmt.Sprintf("all Running in %s; per start p50 %s  p99 %s (CreateContainer p50 %s, StartContainer p50 %s)", secs(bwall), ms(p50), ms(p99), ms(c50), ms(s50)), "floor for the concurrent pods")
	t.add("  bare concurrent: CPU", cpu1.sub(cpu0), "")

	// Concurrent starts on n1.
	settle("concurrent pod starts")
	cpu0 = readCPU(n1.PID, ctrdPID)
	conc, wall, err := b.startMany(ctx, "conc", concPods, func(int) string { return timedNode })
	if err != nil {
		return err
	}
	cpu1 = readCPU(n1.PID, ctrdPID)
	p50, p99 = pcts(mapDur(conc, (*podTimes).startLatency))
	t.add(fmt.Sprintf("pod start, concurrent (%d on %s, %d workers)", concPods, timedNode, podWorkers),
		fmt.Sprintf("all Running in %s; per pod p50 %s  p99 %s", secs(wall), ms(p50), ms(p99)), "")
	for _, pt := range conc {
		pt.stampDirs(n1)
	}
	t.add("  concurrent: stage p50s", compactStartStages(conc, b.ev), "")
	t.add("  concurrent: CPU", cpu1.sub(cpu0), "")
	if wall, err = b.deleteAllTimed(ctx, conc); err != nil {
		return err
	}
	p50, p99 = pcts(mapDur(conc, (*podTimes).deleteLatency))
	t.add(fmt.Sprintf("pod teardown, concurrent (%d, %d workers)", concPods, podWorkers),
		fmt.Sprintf("all gone in %s; per pod p50 %s  p99 %s", secs(wall), ms(p50), ms(p99)), "")

	// Burst across the three nodes.
	nodes := []string{"n1", "n2", "n3"}
	settle("the burst")
	cpu0 = readCPU(n1.PID, ctrdPID)
	burst, wall, err := b.startMany(ctx, "burst", burstPods, func(i int) string { return nodes[i%len(nodes)] })
	if err != nil {
		return err
	}
	cpu1 = readCPU(n1.PID, ctrdPID)
	p50, p99 = pcts(mapDur(burst, (*podTimes).startLatency))
	t.add(fmt.Sprintf("burst: %d pods on 3 nodes, %d workers: first create → all Running", burstPods, podWorkers),
		fmt.Sprintf("%s  (per pod p50 %s  p99 %s)", secs(wall), ms(p50), ms(p99)), "≤ 8 s")
	var burstN1 []*podTimes
	for _, pt := range burst {
		if pt.node == timedNode {
			pt.stampDirs(n1)
			burstN1 = append(burstN1, pt)
		}
	}
	t.add(fmt.Sprintf("  burst: stage p50s (%s's %d pods)", timedNode, len(burstN1)), compactStartStages(burstN1, b.ev), "")
	t.add("  burst: CPU", cpu1.sub(cpu0), "")
	if wall, err = b.deleteAllTimed(ctx, burst); err != nil {
		return err
	}
	t.add(fmt.Sprintf("burst teardown: %d deletes → all gone", burstPods), secs(wall), "")

	// 100 pods on n1 for the agent's RSS.
	_, wall, err = b.startMany(ctx, "rss", rssPods, func(int) string { return timedNode })
	if err != nil {
		return err
	}
	t.add(fmt.Sprintf("%d pods on %s, %d workers: first create → all Running", rssPods, timedNode, podWorkers), secs(wall), "")
	time.Sleep(5 * time.Second) // let status writes and the resync settle
	ctrd100 := rssBytes(ctrdPID)
	t.add(fmt.Sprintf("agent RSS, %s: 0 pods → %d pods", timedNode, rssPods), fmt.Sprintf("%s → %s", mib(rss0), rssSplit(n1.PID)), "≤ 150 MiB with 100 pods")
	t.add(fmt.Sprintf("containerd RSS, %s: 0 pods → %d pods", timedNode, rssPods), fmt.Sprintf("%s → %s", mib(ctrd0), mib(ctrd100)), "")
	shims, shimPss := procsPss(n1.DataDir, "containerd-shim")
	loggers, loggerPss := procsPss(n1.DataDir, logfile.LoggerCommand)
	t.add(fmt.Sprintf("per-pod processes on %s with %d pods (Pss)", timedNode, rssPods),
		fmt.Sprintf("%d shims %s; %d container-loggers %s", shims, mib(shimPss), loggers, mib(loggerPss)), "outside the agent's RSS")
	termAfter := raftTerm(ctx, hc, c)
	t.add("raft elections during the pod benchmarks", electionsResult(c, "the pod benchmarks", termBefore, termAfter), "0: pod bursts starve no heartbeat")
	return nil
}

// ---- pods ----

func benchPod(name, node string) *corev1.Pod {
	zero := int64(0)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "shoal-bench"}},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			RestartPolicy:                 corev1.RestartPolicyAlways,
			TerminationGracePeriodSeconds: &zero,
			Containers: []corev1.Container{{
				Name:    "main",
				Image:   images.BusyboxRef,
				Command: []string{"sleep", "3600"},
			}},
		},
	}
}

// create creates a pod, timing the call.
func (b *podBench) create(ctx context.Context, name, node string) (*podTimes, error) {
	pt, err := b.w.track(name, node)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	_, err = b.cs.CoreV1().Pods(podNS).Create(ctx, benchPod(name, node), metav1.CreateOptions{})
	end := time.Now()
	b.w.mu.Lock()
	pt.create, pt.created = start, end
	b.w.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("creating pod %s: %w", name, err)
	}
	return pt, nil
}

// delete deletes a pod with the default grace period, timing the call.
func (b *podBench) delete(ctx context.Context, pt *podTimes) error {
	start := time.Now()
	b.w.mu.Lock()
	pt.del = start
	b.w.mu.Unlock()
	err := b.cs.CoreV1().Pods(podNS).Delete(ctx, pt.name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting pod %s: %w", pt.name, err)
	}
	return nil
}

// startMany creates n pods from podWorkers workers and waits until all are
// Running; wall is from the first create call to the last Running event.
func (b *podBench) startMany(ctx context.Context, prefix string, n int, node func(int) string) ([]*podTimes, time.Duration, error) {
	pts := make([]*podTimes, n)
	start := time.Now()
	err := parallel(n, podWorkers, func(i int) error {
		pt, err := b.create(ctx, fmt.Sprintf("%s-%d", prefix, i), node(i))
		pts[i] = pt
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	if err := b.w.waitRunning(ctx, pts, podTimeout); err != nil {
		return nil, 0, err
	}
	last := start
	for _, pt := range pts {
		last = later(last, pt.running)
	}
	return pts, last.Sub(start), nil
}

// deleteAllTimed deletes pods from podWorkers workers and waits until all
// are gone; it returns the time from the first delete call to the last
// DELETED event.
func (b *podBench) deleteAllTimed(ctx context.Context, pts []*podTimes) (time.Duration, error) {
	start := time.Now()
	if err := b.deleteAll(ctx, pts); err != nil {
		return 0, err
	}
	last := start
	for _, pt := range pts {
		last = later(last, pt.deleted)
	}
	return last.Sub(start), nil
}

func (b *podBench) deleteAll(ctx context.Context, pts []*podTimes) error {
	if err := parallel(len(pts), podWorkers, func(i int) error { return b.delete(ctx, pts[i]) }); err != nil {
		return err
	}
	return b.w.waitDeleted(ctx, pts, podTimeout)
}

// parallel calls f(0..n-1) from workers goroutines and returns the first
// error.
func parallel(n, workers int, f func(i int) error) error {
	var (
		next  atomic.Int64
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for w := 0; w < min(workers, n); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					once.Do(func() { first = err })
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// ---- the pod watch ----

// podTimes is what the benchmark knows of one pod. Fields are written
// under podWatch.mu; the channels close when running and deleted are set.
type podTimes struct {
	name, node      string
	uid             types.UID
	create, created time.Time // create call made, returned
	added, running  time.Time // watch: first seen, first seen Running
	del, deleted    time.Time // delete call made; watch: DELETED
	podDir, podFile time.Time // birth of the agent's pod dir and etc-hosts
	runningC        chan struct{}
	deletedC        chan struct{}
	last            *corev1.Pod // latest version seen
}

func (pt *podTimes) startLatency() time.Duration  { return pt.running.Sub(pt.create) }
func (pt *podTimes) deleteLatency() time.Duration { return pt.deleted.Sub(pt.del) }

// stampDirs reads the birth times of the pod's directory and etc-hosts in
// the agent's data dir (<data>/agent/pods/<uid>): when the agent began the
// pod's first sync and when its network and files were ready.
func (pt *podTimes) stampDirs(n localcluster.NodeInfo) {
	dir := filepath.Join(n.DataDir, "agent", "pods", string(pt.uid))
	pt.podDir = btime(dir)
	pt.podFile = btime(filepath.Join(dir, "etc-hosts"))
}

// podWatch follows the pods of a namespace and timestamps what it sees of
// the tracked ones.
type podWatch struct {
	cs kubernetes.Interface
	ns string

	mu   sync.Mutex
	pods map[string]*podTimes
}

func newPodWatch(cs kubernetes.Interface, ns string) *podWatch {
	return &podWatch{cs: cs, ns: ns, pods: map[string]*podTimes{}}
}

// track registers a pod about to be created.
func (w *podWatch) track(name, node string) (*podTimes, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.pods[name] != nil {
		return nil, fmt.Errorf("pod %s tracked twice", name)
	}
	pt := &podTimes{name: name, node: node, runningC: make(chan struct{}), deletedC: make(chan struct{})}
	w.pods[name] = pt
	return pt, nil
}

// named returns the tracked pods whose name starts with prefix.
func (w *podWatch) named(prefix string) []*podTimes {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []*podTimes
	for name, pt := range w.pods {
		if strings.HasPrefix(name, prefix) {
			out = append(out, pt)
		}
	}
	return out
}

// run follows the pods of w's namespace (see watchPods); ready is closed
// after the first list.
func (w *podWatch) run(ctx context.Context, ready chan struct{}) {
	watchPods(ctx, w.cs.CoreV1().Pods(w.ns), "", ready, w.observe, w.sweep)
}

func (w *podWatch) observe(typ watch.EventType, p *corev1.Pod, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	pt := w.pods[p.Name]
	if pt == nil || (pt.uid != "" && pt.uid != p.UID) {
		return
	}
	pt.uid = p.UID
	pt.last = p
	if pt.added.IsZero() {
		pt.added = now
	}
	if typ == watch.Deleted {
		if pt.deleted.IsZero() {
			pt.deleted = now
			close(pt.deletedC)
		}
		return
	}
	if p.Status.Phase == corev1.PodRunning && pt.running.IsZero() {
		pt.running = now
		close(pt.runningC)
	}
}

// sweep marks tracked pods missing from a relist as deleted (the watch
// missed their DELETED event).
func (w *podWatch) sweep(present map[string]bool, listed, now time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for name, pt := range w.pods {
		if !present[name] && !pt.created.IsZero() && pt.created.Before(listed) && pt.deleted.IsZero() {
			pt.deleted = now
			close(pt.deletedC)
		}
	}
}

func (w *podWatch) waitRunning(ctx context.Context, pts []*podTimes, timeout time.Duration) error {
	return w.wait(ctx, pts, timeout, "Running", func(pt *podTimes) <-chan struct{} { return pt.runningC })
}

func (w *podWatch) waitDeleted(ctx context.Context, pts []*podTimes, timeout time.Duration) error {
	return w.wait(ctx, pts, timeout, "gone", func(pt *podTimes) <-chan struct{} { return pt.deletedC })
}

func (w *podWatch) wait(ctx context.Context, pts []*podTimes, timeout time.Duration, what string, ch func(*podTimes) <-chan struct{}) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for i, pt := range pts {
		select {
		case <-ch(pt):
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			left := 0
			for _, q := range pts[i:] {
				select {
				case <-ch(q):
				default:
					left++
				}
			}
			w.mu.Lock()
			last := summary(pt.last)
			w.mu.Unlock()
			return fmt.Errorf("%d of %d pods not %s after %s; %s: %s", left, len(pts), what, timeout, pt.name, last)
		}
	}
	return nil
}

func summary(p *corev1.Pod) string {
	if p == nil {
		return "never seen"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "phase=%s msg=%q", p.Status.Phase, p.Status.Message)
	for _, c := range p.Status.ContainerStatuses {
		switch s := c.State; {
		case s.Waiting != nil:
			fmt.Fprintf(&b, " [%s waiting %s %q]", c.Name, s.Waiting.Reason, s.Waiting.Message)
		case s.Running != nil:
			fmt.Fprintf(&b, " [%s running]", c.Name)
		case s.Terminated != nil:
			fmt.Fprintf(&b, " [%s terminated %s %d]", c.Name, s.Terminated.Reason, s.Terminated.ExitCode)
		}
	}
	return b.String()
}

// ---- bare starts ----

// openRuntime connects the repository's containerd runtime to the node's
// private daemon with the node's own settings: the agent's daemon lives in
// <data dir>/containerd (node/runtime.go), socket containerd.sock, runc
// state runc/ and FIFOs fifo/ there (containerd.Daemon.RuntimeConfig), in
// namespace "shoal" (DefaultConfig). logBinary, if set, is the shoal binary
// for `shoal container-logger`, as the agent configures it.
func openRuntime(ctx context.Context, n localcluster.NodeInfo, logBinary string) (*containerd.Runtime, error) {
	d := filepath.Join(n.DataDir, "containerd")
	cfg := containerd.DefaultConfig()
	cfg.Address, cfg.RuncRoot, cfg.FIFODir = filepath.Join(d, "containerd.sock"), filepath.Join(d, "runc"), filepath.Join(d, "fifo")
	if logBinary != "" {
		cfg.LogBinary, cfg.LogBinaryArgs = logBinary, []string{logfile.LoggerCommand}
	}
	return containerd.New(ctx, cfg)
}

type bareTimes struct{ create, start, status time.Duration }

func (b bareTimes) total() time.Duration { return b.create + b.start + b.status }

// bareStart creates and starts busybox `sleep` until Status says Running,
// then removes it (untimed).
func bareStart(ctx context.Context, rt *containerd.Runtime, n localcluster.NodeInfo, id string) (bareTimes, error) {
	bt, err := bareUp(ctx, rt, n, id)
	if rerr := bareRemove(ctx, rt, n, id); err == nil && rerr != nil {
		err = fmt.Errorf("bare start %s: %w", id, rerr)
	}
	return bt, err
}

func bareRemove(ctx context.Context, rt *containerd.Runtime, n localcluster.NodeInfo, id string) error {
	defer os.Remove(bareLogPath(n, id))
	return rt.RemoveContainer(context.WithoutCancel(ctx), id)
}

func bareLogPath(n localcluster.NodeInfo, id string) string {
	return filepath.Join(n.DataDir, "bench-bare", id+".log")
}

// bareUp creates and starts busybox `sleep` until Status says Running; the
// caller removes it.
func bareUp(ctx context.Context, rt *containerd.Runtime, n localcluster.NodeInfo, id string) (bareTimes, error) {
	logPath := bareLogPath(n, id)
	t0 := time.Now()
	if err := rt.CreateContainer(ctx, container.ContainerSpec{ID: id, Image: images.BusyboxRef, Command: []string{"sleep", "3600"}, LogPath: logPath}); err != nil {
		return bareTimes{}, fmt.Errorf("bare start %s: %w", id, err)
	}
	t1 := time.Now()
	err := rt.StartContainer(ctx, id)
	t2 := time.Now()
	var st container.ContainerStatus
	if err == nil {
		st, err = rt.Status(ctx, id)
	}
	t3 := time.Now()
	if err == nil && st.State != container.StateRunning {
		err = fmt.Errorf("state %v", st.State)
	}
	if err != nil {
		return bareTimes{}, fmt.Errorf("bare start %s: %w", id, err)
	}
	return bareTimes{create: t1.Sub(t0), start: t2.Sub(t1), status: t3.Sub(t2)}, nil
}

// ---- containerd events, for the breakdowns ----

// ctrEvents records when containerd published the lifecycle events of each
// container: topic → container ID → time.
type ctrEvents struct {
	cancel context.CancelFunc
	mu     sync.Mutex
	at     map[string]map[string]time.Time
}

func subscribeEvents(ctx context.Context, rt *containerd.Runtime) (*ctrEvents, error) {
	ctx, cancel := context.WithCancel(ctx)
	e := &ctrEvents{cancel: cancel, at: map[string]map[string]time.Time{}}
	ch, errs := rt.Client().Subscribe(ctx, fmt.Sprintf(`namespace==%q`, rt.Namespace()))
	go func() {
		for {
			select {
			case env := <-ch:
				if env == nil || env.Event == nil {
					continue
				}
				var id string
				v := env.Event.GetValue()
				switch env.Topic {
				case "/snapshot/prepare":
					var m eventsapi.SnapshotPrepare
					if proto.Unmarshal(v, &m) == nil {
						id = m.Key
					}
				case "/containers/create":
					var m eventsapi.ContainerCreate
					if proto.Unmarshal(v, &m) == nil {
						id = m.ID
					}
				case "/containers/delete":
					var m eventsapi.ContainerDelete
					if proto.Unmarshal(v, &m) == nil {
						id = m.ID
					}
				case "/tasks/create":
					var m eventsapi.TaskCreate
					if proto.Unmarshal(v, &m) == nil {
						id = m.ContainerID
					}
				case "/tasks/start":
					var m eventsapi.TaskStart
					if proto.Unmarshal(v, &m) == nil {
						id = m.ContainerID
					}
				case "/tasks/exit":
					var m eventsapi.TaskExit
					if proto.Unmarshal(v, &m) == nil && m.ID == m.ContainerID { // the main process
						id = m.ContainerID
					}
				case "/tasks/delete":
					var m eventsapi.TaskDelete
					if proto.Unmarshal(v, &m) == nil {
						id = m.ContainerID
					}
				}
				if id == "" {
					continue
				}
				e.mu.Lock()
				if e.at[env.Topic] == nil {
					e.at[env.Topic] = map[string]time.Time{}
				}
				if _, ok := e.at[env.Topic][id]; !ok {
					e.at[env.Topic][id] = env.Timestamp
				}
				e.mu.Unlock()
			case err := <-errs:
				if err != nil && ctx.Err() == nil {
					fmt.Fprintln(os.Stderr, "bench: containerd events:", err)
				}
				return
			}
		}
	}()
	return e, nil
}

func (e *ctrEvents) close() { e.cancel() }

// ofPod is when topic happened to the (first) container of the pod with uid:
// the agent's container IDs start with the pod UID.
func (e *ctrEvents) ofPod(topic string, uid types.UID) time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	var at time.Time
	for id, t := range e.at[topic] {
		if strings.HasPrefix(id, string(uid)+"-") && (at.IsZero() || t.Before(at)) {
			at = t
		}
	}
	return at
}

type stage struct{ what, value string }

// stages turns per-pod timestamps into consecutive intervals, reporting
// p50 and p99 of each over the pods that have both ends.
func stages(pts []*podTimes, names []string, marks func(*podTimes) []time.Time) []stage {
	var out []stage
	per := make([][]time.Duration, len(names))
	for _, pt := range pts {
		m := marks(pt)
		for i := range names {
			if !m[i].IsZero() && !m[i+1].IsZero() {
				per[i] = append(per[i], m[i+1].Sub(m[i]))
			}
		}
	}
	for i, name := range names {
		if len(per[i]) == 0 {
			out = append(out, stage{name, "no data"})
			continue
		}
		p50, p99 := pcts(per[i])
		out = append(out, stage{name, fmt.Sprintf("p50 %s  p99 %s  (n=%d)", ms(p50), ms(p99), len(per[i]))})
	}
	return out
}

// startStageNames are the consecutive intervals of a pod start, short
// names (for the compact rows) first.
var startStageNames = [][2]string{
	{"notice", "create call → agent makes the pod dir (commit, watch to agent, worker; file times tick at ~4 ms)"},
	{"net", "pod dir → etc-hosts written (pod network, IPAM, files)"},
	{"prep", "etc-hosts → containerd snapshot prepare (image lookup, spec)"},
	{"ctr", "snapshot prepare → container record created"},
	{"task", "container created → task created (shim, runc create, logger)"},
	{"start", "task created → task started (runc start)"},
	{"status", "task started → Running seen by the watch (status, commit, watch)"},
}

func startStages(pts []*podTimes, e *ctrEvents) []stage {
	var names []string
	for _, n := range startStageNames {
		names = append(names, n[1])
	}
	return stages(pts, names, startMarks(e))
}

func startMarks(e *ctrEvents) func(pt *podTimes) []time.Time {
	return func(pt *podTimes) []time.Time {
		return []time.Time{pt.create, pt.podDir, pt.podFile,
			e.ofPod("/snapshot/prepare", pt.uid), e.ofPod("/containers/create", pt.uid),
			e.ofPod("/tasks/create", pt.uid), e.ofPod("/tasks/start", pt.uid), pt.running}
	}
}

// compactStartStages is one line of the p50s of the start stages.
func compactStartStages(pts []*podTimes, e *ctrEvents) string {
	var parts []string
	marks := startMarks(e)
	for i, n := range startStageNames {
		var ds []time.Duration
		for _, pt := range pts {
			m := marks(pt)
			if !m[i].IsZero() && !m[i+1].IsZero() {
				ds = append(ds, m[i+1].Sub(m[i]))
			}
		}
		if len(ds) == 0 {
			parts = append(parts, n[0]+" ?")
			continue
		}
		p50, _ := pcts(ds)
		parts = append(parts, fmt.Sprintf("%s %.0f", n[0], float64(p50)/float64(time.Millisecond)))
	}
	return strings.Join(parts, " · ") + " ms"
}

func teardownStages(pts []*podTimes, e *ctrEvents) []stage {
	names := []string{
		"delete call → container exited (SIGTERM, grace, SIGKILL)",
		"exited → task deleted",
		"task deleted → container deleted",
		"container deleted → DELETED seen by the watch (network, files, delete commit)",
	}
	return stages(pts, names, func(pt *podTimes) []time.Time {
		return []time.Time{pt.del, e.ofPod("/tasks/exit", pt.uid), e.ofPod("/tasks/delete", pt.uid),
			e.ofPod("/containers/delete", pt.uid), pt.deleted}
	})
}

// ---- helpers ----

// procsPss counts the processes whose command line mentions both dataDir
// and word, and sums their proportional set size.
func procsPss(dataDir, word string) (n int, pss int64) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil || !strings.Contains(string(b), dataDir) || !strings.Contains(string(b), word) {
			continue
		}
		n++
		r, _ := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
		for _, l := range strings.Split(string(r), "\n") {
			if v, ok := strings.CutPrefix(l, "Pss:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				pss += kb * 1024
			}
		}
	}
	return n, pss
}

// btime is a file's birth time (statx), zero if unknown. File timestamps
// come from the kernel's coarse clock: a few ms of granularity.
func btime(path string) time.Time {
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, 0, unix.STATX_BTIME, &st); err != nil || st.Mask&unix.STATX_BTIME == 0 {
		return time.Time{}
	}
	return time.Unix(st.Btime.Sec, int64(st.Btime.Nsec))
}

func readPID(path string) int {
	b, _ := os.ReadFile(path)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(ls[max(0, len(ls)-n):], "\n")
}

func mapDur[T any](xs []T, f func(T) time.Duration) []time.Duration {
	out := make([]time.Duration, len(xs))
	for i, x := range xs {
		out[i] = f(x)
	}
	return out
}

// pcts sorts ds and returns its p50 and p99.
func pcts(ds []time.Duration) (p50, p99 time.Duration) {
	slices.Sort(ds)
	return pct(ds, 50), pct(ds, 99)
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// pstr formats the p50 and p99 of ds.
func pstr(ds []time.Duration) string {
	p50, p99 := pcts(ds)
	return fmt.Sprintf("p50 %s  p99 %s", ms(p50), ms(p99))
}

// cpuSample is the machine's CPU time (all processes, other users' too)
// and that of the n1 agent and containerd, in clock ticks.
type cpuSample struct {
	at                time.Time
	busy, total       int64
	agent, containerd int64
}

func readCPU(agentPID, ctrdPID int) cpuSample {
	s := cpuSample{at: time.Now(), agent: procTicks(agentPID), containerd: procTicks(ctrdPID)}
	b, _ := os.ReadFile("/proc/stat")
	line, _, _ := strings.Cut(string(b), "\n")
	for i, f := range strings.Fields(line)[1:] {
		v, _ := strconv.ParseInt(f, 10, 64)
		if i < 8 { // user nice system idle iowait irq softirq steal
			s.total += v
			if i != 3 && i != 4 {
				s.busy += v
			}
		}
	}
	return s
}

// sub describes the CPU used between s0 and s.
func (s cpuSample) sub(s0 cpuSample) string {
	const hz = 100 // USER_HZ
	wall := s.at.Sub(s0.at).Seconds()
	busy := s.busyFrac(s0)
	return fmt.Sprintf("machine %.0f%% busy over %.1f s (%d cores, everyone's load); %s agent %.2f s, containerd %.2f s CPU",
		100*busy, wall, runtime.NumCPU(), timedNode, float64(s.agent-s0.agent)/hz, float64(s.containerd-s0.containerd)/hz)
}

// busyFrac is the fraction of the machine's CPU time that was busy between
// s0 and s.
func (s cpuSample) busyFrac(s0 cpuSample) float64 {
	return float64(s.busy-s0.busy) / float64(max(s.total-s0.total, 1))
}

// settle waits, up to settleMax, until the machine is quiet (under
// settleBusy of its CPU busy over a second), so that what an earlier stage
// left running (exiting processes, page-cache writeback, namespaces being
// freed) is not timed as the next stage's cost.
func settle(what string) {
	const settleBusy, settleMax = 0.10, 30 * time.Second
	deadline := time.Now().Add(settleMax)
	for {
		s0 := readCPU(0, 0)
		time.Sleep(time.Second)
		busy := readCPU(0, 0).busyFrac(s0)
		if busy < settleBusy || time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "bench: before %s: machine %.0f%% busy\n", what, 100*busy)
			return
		}
	}
}

// procTicks is a process's user+system CPU time in clock ticks.
func procTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b)[i+2:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return u + st
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
