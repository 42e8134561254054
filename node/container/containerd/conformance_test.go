package containerd

import (
	"testing"

	"github.com/shoal-dev/shoal/node/container/containertest"
)

// The real runtime passes the same contract as the fake.
func TestConformance(t *testing.T) {
	rt := newRuntime(t, sharedDaemon(t))
	ref := importBusybox(t, rt)
	containertest.TestRuntime(t, containertest.Harness{
		Runtime:  rt,
		Image:    ref,
		Spec:     containertest.ExitFileSpec(ref),
		MakeExit: containertest.ExitFileMakeExit(rt),
	})
}
