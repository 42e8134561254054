package containerd

import (
	"testing"

	"github.com/shoal-dev/shoal/node/container"
	"github.com/shoal-dev/shoal/node/container/containertest"
)

// The real runtime passes the same contract as the fake.
func TestConformance(t *testing.T) {
	d := sharedDaemon(t)
	rt := loggingRuntime(t, loggingConfig(t, d)) // with a logger: stdin and tty
	ref := importBusybox(t, rt)
	containertest.TestRuntime(t, containertest.Harness{
		Runtime:  rt,
		Image:    ref,
		Spec:     containertest.ExitFileSpec(ref),
		MakeExit: containertest.ExitFileMakeExit(rt),
		Stdin:    true,
		// Another namespace of the daemon plays the peer.
		Mirror: func(t *testing.T) (container.Mirror, string) {
			const pulled = "shoal.test/pulled:1"
			cfg := rt.cfg
			cfg.Namespace = rt.cfg.Namespace + "-mirror"
			peer := openRuntime(t, cfg)
			archive, _ := buildBusybox(t, pulled)
			importArchive(t, peer, archive)
			t.Cleanup(func() { deleteImage(t, rt, pulled) })
			return serveMirror(t, peer, nil), pulled
		},
	})
}
