package containerd

import (
	"context"
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"

	ctd "github.com/containerd/containerd"
	"github.com/containerd/containerd/cio"
	"github.com/containerd/containerd/oci"

	"github.com/shoal-dev/shoal/node/container"
)

// BenchmarkStart: CreateContainer + StartContainer of busybox `sleep` until
// Running, then RemoveContainer, on a private daemon. Reports the medians
// of both halves and of CreateContainer alone.
func BenchmarkStart(b *testing.B) {
	rt := newRuntime(b, sharedDaemon(b))
	ref := importBusybox(b, rt)
	ctx := context.Background()
	var starts, teardowns, creates []time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		id := fmt.Sprintf("bench-%d-%d", time.Now().UnixNano()%1e6, i)
		t0 := time.Now()
		if err := rt.CreateContainer(ctx, container.ContainerSpec{ID: id, Image: ref, Command: []string{"sleep", "60"}, LogPath: "/dev/null"}); err != nil {
			b.Fatal(err)
		}
		creates = append(creates, time.Since(t0))
		if err := rt.StartContainer(ctx, id); err != nil {
			b.Fatal(err)
		}
		if st, err := rt.Status(ctx, id); err != nil || st.State != container.StateRunning {
			b.Fatalf("status %+v %v", st, err)
		}
		t1 := time.Now()
		if err := rt.RemoveContainer(ctx, id); err != nil {
			b.Fatal(err)
		}
		starts, teardowns = append(starts, t1.Sub(t0)), append(teardowns, time.Since(t1))
	}
	reportMedians(b, starts, teardowns)
	b.ReportMetric(pctMs(creates, 0.5), "create-p50-ms")
}

// BenchmarkBareStart is the same cycle straight on the containerd client
// with the fewest options, the floor the adapter is measured against.
func BenchmarkBareStart(b *testing.B) {
	rt := newRuntime(b, sharedDaemon(b))
	ref := importBusybox(b, rt)
	ctx := rt.ns(context.Background())
	c := rt.client
	img, err := c.GetImage(ctx, "docker.io/"+ref)
	if err != nil {
		if img, err = c.GetImage(ctx, ref); err != nil {
			b.Fatal(err)
		}
	}
	var starts, teardowns []time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		id := fmt.Sprintf("bare-%d-%d", time.Now().UnixNano()%1e6, i)
		t0 := time.Now()
		ctr, err := c.NewContainer(ctx, id, ctd.WithNewSnapshot(id, img),
			ctd.WithRuntime(rt.cfg.Runtime, rt.runcOptions()),
			ctd.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs("sleep", "60")))
		if err != nil {
			b.Fatal(err)
		}
		task, err := ctr.NewTask(ctx, cio.NullIO, rt.withRuncRoot)
		if err != nil {
			b.Fatal(err)
		}
		statusC, err := task.Wait(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := task.Start(ctx); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		task.Kill(ctx, syscall.SIGKILL)
		<-statusC
		if _, err := task.Delete(ctx); err != nil {
			b.Fatal(err)
		}
		if err := ctr.Delete(ctx, ctd.WithSnapshotCleanup); err != nil {
			b.Fatal(err)
		}
		RemoveCgroup("/" + rt.Namespace() + "/" + id)
		starts, teardowns = append(starts, t1.Sub(t0)), append(teardowns, time.Since(t1))
	}
	reportMedians(b, starts, teardowns)
}

// pctMs is the p-th quantile (0..1) of d in milliseconds (0 when empty).
func pctMs(d []time.Duration, p float64) float64 {
	if len(d) == 0 {
		return 0
	}
	d = slices.Clone(d)
	slices.Sort(d)
	return float64(d[int(p*float64(len(d)-1))].Microseconds()) / 1000
}

func reportMedians(b *testing.B, starts, teardowns []time.Duration) {
	if len(starts) == 0 {
		return
	}
	b.ReportMetric(pctMs(starts, 0.5), "start-p50-ms")
	b.ReportMetric(pctMs(starts, 0.99), "start-p99-ms")
	b.ReportMetric(pctMs(teardowns, 0.5), "teardown-p50-ms")
}
