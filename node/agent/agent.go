package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/shoal-dev/shoal/node/container"
	"github.com/shoal-dev/shoal/node/events"
	"github.com/shoal-dev/shoal/node/podnet"
	"github.com/shoal-dev/shoal/node/state"
)

// Defaults of Config.
const (
	DefaultClusterDNS    = "10.43.0.10"
	DefaultClusterDomain = "cluster.local"
	DefaultBackoffBase   = 10 * time.Second
	DefaultBackoffMax    = 300 * time.Second
	DefaultResync        = 10 * time.Second
)

// Network is the pod network of the node: *podnet.Network, or a fake in
// tests.
type Network interface {
	Setup(ctx context.Context, podID, netnsPath string) (podnet.PodNet, error)
	Teardown(ctx context.Context, podID string) error
	GC(ctx context.Context, keep map[string]bool) error
	SetPeers(ctx context.Context, peers []podnet.Peer) error
}

// Config wires an Agent to its node. Store, Proposer, Runtime, Network,
// NodeName and DataDir are required.
type Config struct {
	NodeName string
	// HostIP is the node's address, reported as the pods' hostIP.
	HostIP string
	// Store is the node's replica; Proposer commits pod status and the
	// final deletion of pods that finished terminating.
	Store    *state.Store
	Proposer state.Proposer
	Runtime  container.Runtime
	Network  Network
	// DataDir holds the pods' files (hosts, resolv.conf, emptyDir volumes)
	// and their container logs.
	DataDir string

	ClusterDNS    string
	ClusterDomain string

	// Mirrors lists the peers to pull ref from, best first; nil pulls from
	// registries only.
	Mirrors func(ref string) []container.Mirror
	// PullFromRegistries lets the agent try an image's own registry after
	// the mirrors.
	PullFromRegistries bool

	// BackoffBase and BackoffMax bound the restart back-off of crashing
	// containers (CrashLoopBackOff) and failed pulls (ImagePullBackOff).
	BackoffBase, BackoffMax time.Duration
	// Resync is how often every pod is synced with nothing happening.
	Resync time.Duration
	// Events records what the agent does to pods (pulls, starts, kills,
	// back-offs, probe failures) for kubectl describe; nil records nothing.
	Events *events.Recorder
	// ServiceAccountToken mints a token for the pod's service account,
	// bound to the pod, for audience ("" for the API server's) and valid
	// for expirationSeconds: what a projected serviceAccountToken source
	// shows. nil makes such sources a configuration error.
	ServiceAccountToken func(pod *corev1.Pod, audience string, expirationSeconds int64) (string, error)
	// RemoveCgroup deletes a pod's (empty) parent cgroup, e.g.
	// "/shoal/pod-<uid>", once its containers are gone; nil leaves it.
	RemoveCgroup func(path string) error

	Log *slog.Logger
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.ClusterDNS == "" {
		c.ClusterDNS = DefaultClusterDNS
	}
	if c.ClusterDomain == "" {
		c.ClusterDomain = DefaultClusterDomain
	}
	if c.BackoffBase <= 0 {
		c.BackoffBase = DefaultBackoffBase
	}
	if c.BackoffMax < c.BackoffBase {
		c.BackoffMax = max(DefaultBackoffMax, c.BackoffBase)
	}
	if c.Resync <= 0 {
		c.Resync = DefaultResync
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

func (c *Config) validate() error {
	switch {
	case c.NodeName == "":
		return errors.New("agent: no node name")
	case c.Store == nil || c.Proposer == nil:
		return errors.New("agent: no store or proposer")
	case c.Runtime == nil:
		return errors.New("agent: no container runtime")
	case c.Network == nil:
		return errors.New("agent: no pod network")
	case c.DataDir == "" || !filepath.IsAbs(c.DataDir):
		return fmt.Errorf("agent: data dir %q is not absolute", c.DataDir)
	}
	if c.HostIP != "" && net.ParseIP(c.HostIP) == nil {
		return fmt.Errorf("agent: bad host IP %q", c.HostIP)
	}
	return nil
}

// Agent is the kubelet role of one node: it runs the pods bound to the node
// on the container runtime, gives them their network, probes them and
// reports their status. Create it with New and start it with Run.
type Agent struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	workers map[types.UID]*podWorker // guarded by mu
	// byContainer maps a container ID to the pod that owns it, for exits.
	byContainer map[string]types.UID // guarded by mu
	// adopted holds the containers found at start, by pod, until the pod's
	// worker takes them.
	adopted map[types.UID][]container.ContainerStatus // guarded by mu

	wg sync.WaitGroup
}

// New checks cfg and returns an Agent.
func New(cfg Config) (*Agent, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Agent{
		cfg:         cfg,
		log:         cfg.Log,
		workers:     map[types.UID]*podWorker{},
		byContainer: map[string]types.UID{},
		adopted:     map[types.UID][]container.ContainerStatus{},
	}, nil
}

// Run runs the pods bound to this node until ctx ends. Containers keep
// running when Run returns: a restarted agent adopts them.
func (a *Agent) Run(ctx context.Context) error {
	if err := os.MkdirAll(a.podsDir(), 0o700); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	if err := a.adopt(ctx); err != nil {
		return err
	}
	pods, _, w := a.cfg.Store.ListAndWatch(state.WatchOptions{Resource: "pods", Buffer: 1 << 14})
	for _, o := range pods {
		a.podChanged(ctx, o.(*corev1.Pod), false)
	}
	a.wg.Add(3)
	go func() { defer a.wg.Done(); a.dispatchExits(ctx) }()
	go func() { defer a.wg.Done(); a.housekeeping(ctx) }()
	go func() { defer a.wg.Done(); a.syncPeers(ctx) }()
	defer func() {
		w.Stop()
		a.wg.Wait()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events():
			if !ok {
				// The watch ended (a snapshot restore or we fell behind):
				// start again from the replica.
				if ctx.Err() != nil {
					return nil
				}
				a.log.Info("agent: pod watch ended, relisting", "err", w.Err())
				var objs []state.Object
				objs, _, w = a.cfg.Store.ListAndWatch(state.WatchOptions{Resource: "pods", Buffer: 1 << 14})
				seen := map[types.UID]bool{}
				for _, o := range objs {
					p := o.(*corev1.Pod)
					seen[p.UID] = true
					a.podChanged(ctx, p, false)
				}
				a.mu.Lock()
				for uid, pw := range a.workers {
					if !seen[uid] {
						pw.deleted()
					}
				}
				a.mu.Unlock()
				continue
			}
			p := ev.Object.(*corev1.Pod)
			a.podChanged(ctx, p, ev.Type == state.Deleted)
		}
	}
}

// podChanged hands a pod's new state to its worker, starting one for a pod
// newly bound to this node.
func (a *Agent) podChanged(ctx context.Context, p *corev1.Pod, gone bool) {
	if p.Spec.NodeName != a.cfg.NodeName {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	pw := a.workers[p.UID]
	if pw == nil {
		if gone {
			return
		}
		pw = newPodWorker(a, p, a.adopted[p.UID])
		delete(a.adopted, p.UID)
		a.workers[p.UID] = pw
		for _, c := range pw.adoptedIDs() {
			a.byContainer[c] = p.UID
		}
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			pw.run(ctx)
			a.mu.Lock()
			if a.workers[p.UID] == pw {
				delete(a.workers, p.UID)
			}
			for id, uid := range a.byContainer {
				if uid == p.UID {
					delete(a.byContainer, id)
				}
			}
			a.mu.Unlock()
		}()
		return
	}
	if gone {
		pw.deleted()
		return
	}
	pw.update(p)
}

// trackContainer records that container id belongs to pod uid.
func (a *Agent) trackContainer(id string, uid types.UID) {
	a.mu.Lock()
	a.byContainer[id] = uid
	a.mu.Unlock()
}

func (a *Agent) untrackContainer(id string) {
	a.mu.Lock()
	delete(a.byContainer, id)
	a.mu.Unlock()
}

// dispatchExits wakes the worker of every container that exits.
func (a *Agent) dispatchExits(ctx context.Context) {
	exits := a.cfg.Runtime.Exits()
	for {
		select {
		case <-ctx.Done():
			return
		case ex, ok := <-exits:
			if !ok {
				return
			}
			a.mu.Lock()
			pw := a.workers[a.byContainer[ex.ID]]
			a.mu.Unlock()
			if pw != nil {
				pw.containerExited(ex)
			}
		}
	}
}

// adopt lists the runtime's containers, keeps those of pods this node still
// runs for their workers and removes the rest with their networks.
func (a *Agent) adopt(ctx context.Context) error {
	cs, err := a.cfg.Runtime.List(ctx)
	if err != nil {
		return fmt.Errorf("agent: listing containers: %w", err)
	}
	a.mu.Lock()
	for _, c := range cs {
		uid := types.UID(c.Labels[labelPodUID])
		if uid == "" {
			continue // not a pod container
		}
		a.adopted[uid] = append(a.adopted[uid], c)
	}
	n := len(a.adopted)
	a.mu.Unlock()
	if n > 0 {
		a.log.Info("agent: found containers of earlier runs", "pods", n, "containers", len(cs))
	}
	return nil
}

// housekeeping collects what belongs to no pod: containers, networks and
// pod directories, at start and then every minute.
func (a *Agent) housekeeping(ctx context.Context) {
	t := time.NewTimer(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := a.collectGarbage(ctx); err != nil && ctx.Err() == nil {
			a.log.Warn("agent: collecting garbage", "err", err)
		}
		t.Reset(time.Minute)
	}
}

// collectGarbage removes containers, networks and directories of pods this
// agent has no worker for. A pod bound to this node always has a worker
// (podChanged starts one before anything of it exists), so anything else is
// left over from a pod deleted while the agent was down.
func (a *Agent) collectGarbage(ctx context.Context) error {
	a.mu.Lock()
	keep := map[string]bool{}
	for uid := range a.workers {
		keep[string(uid)] = true
	}
	stale := a.adopted
	a.adopted = map[types.UID][]container.ContainerStatus{}
	a.mu.Unlock()

	var errs []error
	for uid, cs := range stale {
		if keep[string(uid)] {
			continue
		}
		a.log.Info("agent: removing containers of a pod that no longer exists", "uid", uid, "containers", len(cs))
		removed := true
		for _, c := range cs {
			if err := a.cfg.Runtime.RemoveContainer(ctx, c.ID); err != nil {
				errs = append(errs, err)
				removed = false
			}
		}
		if removed {
			if err := a.removeCgroup(uid); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// Containers that appeared for no known pod (a worker that ended while a
	// create was in flight) are found by listing again. A pod's worker
	// exists before anything of it does, so the containers and directories
	// are listed before the workers are read again: a pod that starts
	// meanwhile is kept.
	ents, dirErr := os.ReadDir(a.podsDir())
	cs, err := a.cfg.Runtime.List(ctx)
	if err != nil {
		errs = append(errs, err)
	} else {
		a.mu.Lock()
		for uid := range a.workers {
			keep[string(uid)] = true
		}
		a.mu.Unlock()
		orphans := map[types.UID]bool{}
		for _, c := range cs {
			uid := c.Labels[labelPodUID]
			if uid != "" && !keep[uid] {
				if err := a.cfg.Runtime.RemoveContainer(ctx, c.ID); err != nil {
					errs = append(errs, err)
					continue
				}
				orphans[types.UID(uid)] = true
			}
		}
		for uid := range orphans {
			if err := a.removeCgroup(uid); err != nil {
				errs = append(errs, err)
			}
		}
	}
	a.mu.Lock()
	for uid := range a.workers {
		keep[string(uid)] = true
	}
	a.mu.Unlock()
	// Local volumes whose PersistentVolume is gone (reclaim policy Delete)
	// go with their data.
	if vols, err := os.ReadDir(a.volumesDir()); err == nil {
		for _, v := range vols {
			if _, ok := a.cfg.Store.Get("persistentvolumes", "", v.Name()); !ok {
				a.log.Info("agent: removing the data of a deleted local volume", "volume", v.Name())
				if err := os.RemoveAll(filepath.Join(a.volumesDir(), v.Name())); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	if err := a.cfg.Network.GC(ctx, keep); err != nil {
		errs = append(errs, err)
	}
	// Workers leave when the agent stops, their pods' files stay.
	if dirErr == nil && ctx.Err() == nil {
		for _, e := range ents {
			if !keep[e.Name()] {
				if err := removePodDir(filepath.Join(a.podsDir(), e.Name())); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// Pods returns the UIDs of the pods the agent runs, for tests.
func (a *Agent) Pods() []types.UID {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]types.UID, 0, len(a.workers))
	for uid := range a.workers {
		out = append(out, uid)
	}
	return out
}

func (a *Agent) podsDir() string { return filepath.Join(a.cfg.DataDir, "pods") }

// volumesDir holds the local persistent volumes Shoal provisioned on this node.
func (a *Agent) volumesDir() string { return filepath.Join(a.cfg.DataDir, "volumes") }

func (a *Agent) podDir(uid types.UID) string { return filepath.Join(a.podsDir(), string(uid)) }

// worker returns the worker of the pod with uid, or nil.
func (a *Agent) worker(uid types.UID) *podWorker {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.workers[uid]
}

// podCgroup is the parent cgroup of a pod's containers.
func podCgroup(uid types.UID) string { return "/shoal/pod-" + string(uid) }

// removeCgroup deletes a pod's parent cgroup once its containers are gone.
func (a *Agent) removeCgroup(uid types.UID) error {
	if a.cfg.RemoveCgroup == nil {
		return nil
	}
	return a.cfg.RemoveCgroup(podCgroup(uid))
}

// event records an event about a container of pod (name "" for the pod).
func (a *Agent) event(pod *corev1.Pod, name string, isInit bool, eventType, reason, format string, args ...any) {
	if a.cfg.Events == nil {
		return
	}
	path := ""
	if name != "" {
		path = "spec.containers{" + name + "}"
		if isInit {
			path = "spec.initContainers{" + name + "}"
		}
	}
	a.cfg.Events.EventfPath(pod, "Pod", path, eventType, reason, format, args...)
}

// allocatable is this node's allocatable resources from its Node object in
// the replica (nil before the node registered).
func (a *Agent) allocatable() corev1.ResourceList {
	o, ok := a.cfg.Store.Get("nodes", "", a.cfg.NodeName)
	if !ok {
		return nil
	}
	return o.(*corev1.Node).Status.Allocatable
}
