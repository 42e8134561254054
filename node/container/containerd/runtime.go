package containerd

import (
	"context"
	"fmt"
	"sync"

	ctd "github.com/containerd/containerd"
	tasks "github.com/containerd/containerd/api/services/tasks/v1"
	apitask "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/errdefs"
	"github.com/containerd/containerd/namespaces"

	"github.com/shoal-dev/shoal/node/container"
	"github.com/shoal-dev/shoal/node/container/internal/exitq"
	"github.com/shoal-dev/shoal/node/container/internal/keylock"
)

// Runtime is a container.Runtime over one containerd daemon.
type Runtime struct {
	cfg    Config
	client *ctd.Client
	exits  *exitq.Queue
	locks  keylock.Map // serializes Create/Start/Stop/Remove per container ID
	pulls  keylock.Map // serializes PullImage per normalized image ref

	rootfsInfos  imageCache[*rootfsInfo]     // what CreateContainer reads from each image
	descriptions imageCache[container.Image] // what GetImage and ListImages report of each image

	life   context.Context // cancelled by Close; parent of every waiter
	cancel context.CancelFunc
	wg     sync.WaitGroup // waiter goroutines

	mu      sync.Mutex
	waiters map[string]*waiter // guarded by mu; the current waiter per container ID
	closed  bool               // guarded by mu
}

var _ container.Runtime = (*Runtime)(nil)

// New connects to the daemon at cfg.Address and adopts the running
// containers of cfg.Namespace: their exits will be reported on Exits.
func New(ctx context.Context, cfg Config) (*Runtime, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	client, err := ctd.New(cfg.Address, ctd.WithDefaultNamespace(cfg.Namespace), ctd.WithTimeout(cfg.DialTimeout))
	if err != nil {
		return nil, fmt.Errorf("connecting to containerd at %s: %w", cfg.Address, err)
	}
	if cfg.ShimCgroup != "" {
		if err := ensureCPUCgroup(cfg.ShimCgroup); err != nil {
			cfg.logf("shims stay in the daemon's cgroup: creating %s: %v", cfg.ShimCgroup, err)
			cfg.ShimCgroup = ""
		}
	}
	life, cancel := context.WithCancel(context.Background())
	r := &Runtime{cfg: cfg, client: client, exits: exitq.New(), life: life, cancel: cancel, waiters: make(map[string]*waiter)}
	if err := r.adopt(ctx); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// adopt starts a waiter for every task that has not exited yet.
func (r *Runtime) adopt(ctx context.Context) error {
	resp, err := r.client.TaskService().List(r.ns(ctx), &tasks.ListTasksRequest{})
	if err != nil {
		return fmt.Errorf("listing containerd tasks: %w", errdefs.FromGRPC(err))
	}
	for _, p := range resp.Tasks {
		switch p.Status {
		case apitask.Status_RUNNING, apitask.Status_PAUSED, apitask.Status_PAUSING:
			r.startWaiter(p.ID)
		}
	}
	return nil
}

// Close stops the waiters, closes Exits and the connection. Containers keep
// running. It is idempotent.
func (r *Runtime) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()
	r.exits.Close()
	return r.client.Close()
}

// Exits implements container.Runtime.
func (r *Runtime) Exits() <-chan container.Exit { return r.exits.C() }

// Client is the underlying containerd client, for the few callers (image
// serving between nodes) that need the content store itself. Use it with
// the namespace from Namespace.
func (r *Runtime) Client() *ctd.Client { return r.client }

// Namespace is the containerd namespace this runtime works in.
func (r *Runtime) Namespace() string { return r.cfg.Namespace }

func (r *Runtime) ns(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, r.cfg.Namespace)
}

// lock takes the per-container lock after checking the ID.
func (r *Runtime) lock(ctx context.Context, id string) (func(), error) {
	if err := container.CheckID(id); err != nil {
		return nil, err
	}
	return r.locks.Lock(ctx, id)
}
