// Package controllertest holds what the controllers' tests share: a
// controller.Context over an in-memory store, and a poll helper.
package controllertest

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/state"
	"github.com/shoal-dev/shoal/node/state/statetest"
)

// T0 is the fake clock's start.
var T0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

// New returns a context whose proposer applies to a fresh store at once,
// with a fake clock at T0 and UIDs uid-1, uid-2, …; it also returns the
// store and the proposer (for writes a test makes itself).
func New() (controller.Context, *state.Store, *state.LocalProposer) {
	store := state.NewStore(0)
	local := state.NewLocalProposer(state.NewFSM(store, statetest.Sealer{}))
	var uids atomic.Int64
	c := controller.Context{
		Store: store, Proposer: local, Clock: clocktesting.NewFakeClock(T0),
		NewUID: func() types.UID { return types.UID(fmt.Sprintf("uid-%d", uids.Add(1))) },
	}
	return c, store, local
}

// WaitFor polls cond until it holds; it fails the test only if that takes
// far longer than any healthy run could (no timing is asserted).
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
