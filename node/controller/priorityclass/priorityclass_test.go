package priorityclass

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/shoal-dev/shoal/node/admission"
	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/controller/controllertest"
	"github.com/shoal-dev/shoal/node/state"
	"github.com/shoal-dev/shoal/node/state/statetest"
)

type countingProposer struct {
	inner state.Proposer
	calls atomic.Int64
	fail  atomic.Bool
}

func (p *countingProposer) Propose(ctx context.Context, ops ...state.Op) ([]state.Result, error) {
	p.calls.Add(1)
	if p.fail.Load() {
		return nil, state.ErrUnavailable
	}
	return p.inner.Propose(ctx, ops...)
}

type harness struct {
	t     *testing.T
	store *state.Store
	local *state.LocalProposer
	prop  *countingProposer
	pc    *Controller
}

func newHarness(t *testing.T) *harness {
	store := state.NewStore(0)
	local := state.NewLocalProposer(state.NewFSM(store, statetest.Sealer{}))
	h := &harness{t: t, store: store, local: local, prop: &countingProposer{inner: local}}
	var uids atomic.Int64
	h.pc = New(controller.Context{
		Store: store, Proposer: h.prop, Clock: clocktesting.NewFakeClock(time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)),
		NewUID: func() types.UID { return types.UID(fmt.Sprintf("uid-%d", uids.Add(1))) },
	})
	t.Cleanup(h.pc.ShutDown)
	return h
}

func (h *harness) get(name string) *schedulingv1.PriorityClass {
	o, ok := h.store.Get(admission.ResourcePriorityClasses, "", name)
	if !ok {
		return nil
	}
	return o.(*schedulingv1.PriorityClass)
}

func TestCreatesBuiltIns(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	if err := h.pc.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	for name, value := range map[string]int32{"system-cluster-critical": 2000000000, "system-node-critical": 2000001000} {
		pc := h.get(name)
		if pc == nil {
			t.Fatalf("%s not created", name)
		}
		if pc.Value != value || pc.GlobalDefault || pc.UID == "" || pc.Generation != 1 || pc.CreationTimestamp.IsZero() ||
			pc.Description == "" || pc.PreemptionPolicy == nil || *pc.PreemptionPolicy != corev1.PreemptLowerPriority {
			t.Errorf("%s = %+v", name, pc)
		}
	}
	if n := h.prop.calls.Load(); n != 1 {
		t.Errorf("%d proposals, want one for both classes", n)
	}
	if err := h.pc.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if n := h.prop.calls.Load(); n != 1 {
		t.Errorf("a sync with nothing missing proposed (%d proposals)", n)
	}
}

// TestKeepsExisting: a built-in that exists is not touched (its
// description is the user's); only the missing one is created.
func TestKeepsExisting(t *testing.T) {
	h := newHarness(t)
	own := admission.SystemPriorityClasses()[0]
	own.UID, own.Description = "mine", "edited"
	if _, err := h.local.Propose(context.Background(), state.Create(own)); err != nil {
		t.Fatal(err)
	}
	if err := h.pc.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := h.get(own.Name); got.UID != "mine" || got.Description != "edited" {
		t.Errorf("existing class changed: %+v", got)
	}
	other := admission.SystemPriorityClasses()[1].Name
	if h.get(other) == nil {
		t.Errorf("%s not created", other)
	}
}

func TestWriteFailureIsReturned(t *testing.T) {
	h := newHarness(t)
	h.prop.fail.Store(true)
	err := h.pc.Sync(context.Background())
	if !errors.Is(err, state.ErrUnavailable) || !strings.Contains(err.Error(), "system-node-critical") {
		t.Fatalf("err = %v", err)
	}
}

// TestRunRecreatesDeleted: Run creates the built-ins, and creates one
// again after it was deleted.
func TestRunRecreatesDeleted(t *testing.T) {
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.pc.Run(ctx) }()
	defer func() { cancel(); <-done }()

	controllertest.WaitFor(t, "the built-ins", func() bool {
		return h.get(admission.SystemClusterCritical) != nil && h.get(admission.SystemNodeCritical) != nil
	})
	old := h.get(admission.SystemNodeCritical)
	kind, _ := state.KindFor(admission.ResourcePriorityClasses)
	if _, err := h.local.Propose(context.Background(), state.Delete(kind, "", old.Name, controller.RV(old), string(old.UID))); err != nil {
		t.Fatal(err)
	}
	controllertest.WaitFor(t, "system-node-critical again", func() bool {
		pc := h.get(admission.SystemNodeCritical)
		return pc != nil && pc.UID != old.UID
	})
}
