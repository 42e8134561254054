package serviceaccount

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/controller/controllertest"
	"github.com/shoal-dev/shoal/node/state"
)

func TestDefaultServiceAccounts(t *testing.T) {
	c, store, local := controllertest.New()
	sc := New(c, []byte("CA PEM"))
	ns := func(name string, terminating bool) *corev1.Namespace {
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("ns-" + name)},
			Status: corev1.NamespaceStatus{Phase: corev1.NamespaceActive}}
		if terminating {
			n.Status.Phase = corev1.NamespaceTerminating
		}
		return n
	}
	ctx := context.Background()
	if _, err := local.Propose(ctx, state.Create(ns("dev", false)), state.Create(ns("going", true))); err != nil {
		t.Fatal(err)
	}
	run, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); sc.Run(run) }()
	defer func() { cancel(); <-done }()
	get := func(namespace string) state.Object {
		o, _ := store.Get("serviceaccounts", namespace, DefaultName)
		return o
	}
	controllertest.WaitFor(t, "dev's default service account", func() bool { return get("dev") != nil })
	old := get("dev")
	kind, _ := state.KindFor("serviceaccounts")
	if _, err := local.Propose(ctx, state.Delete(kind, "dev", DefaultName, controller.RV(old), string(old.GetUID()))); err != nil {
		t.Fatal(err)
	}
	controllertest.WaitFor(t, "dev's default service account again", func() bool {
		o := get("dev")
		return o != nil && o.GetUID() != old.GetUID()
	})
	if _, err := local.Propose(ctx, state.Create(ns("later", false))); err != nil {
		t.Fatal(err)
	}
	controllertest.WaitFor(t, "a new namespace's default service account", func() bool { return get("later") != nil })
	ca := func(namespace string) string {
		o, ok := store.Get("configmaps", namespace, "kube-root-ca.crt")
		if !ok {
			return ""
		}
		return o.(*corev1.ConfigMap).Data["ca.crt"]
	}
	controllertest.WaitFor(t, "kube-root-ca.crt in later", func() bool { return ca("later") == "CA PEM" })
	cm, _ := store.Get("configmaps", "dev", "kube-root-ca.crt")
	ck, _ := state.KindFor("configmaps")
	if _, err := local.Propose(ctx, state.Delete(ck, "dev", cm.GetName(), controller.RV(cm), string(cm.GetUID()))); err != nil {
		t.Fatal(err)
	}
	controllertest.WaitFor(t, "kube-root-ca.crt in dev again", func() bool {
		o, ok := store.Get("configmaps", "dev", "kube-root-ca.crt")
		return ok && o.GetUID() != cm.GetUID()
	})
	// Synced directly: a terminating namespace gets none.
	if err := sc.Sync(ctx, "going"); err != nil || get("going") != nil || ca("going") != "" {
		t.Fatalf("terminating namespace: err %v, account %v", err, get("going"))
	}
}
