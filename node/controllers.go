package node

import (
	"context"
	"path/filepath"
	"sync"

	rbacv1 "k8s.io/api/rbac/v1"

	"github.com/shoal-dev/shoal/node/apiserver"
	"github.com/shoal-dev/shoal/node/controller"
	"github.com/shoal-dev/shoal/node/controller/apiservice"
	"github.com/shoal-dev/shoal/node/controller/builtin"
	"github.com/shoal-dev/shoal/node/controller/clusterroleaggregation"
	"github.com/shoal-dev/shoal/node/controller/cronjob"
	"github.com/shoal-dev/shoal/node/controller/daemonset"
	"github.com/shoal-dev/shoal/node/controller/deployment"
	"github.com/shoal-dev/shoal/node/controller/endpoints"
	"github.com/shoal-dev/shoal/node/controller/gc"
	"github.com/shoal-dev/shoal/node/controller/job"
	"github.com/shoal-dev/shoal/node/controller/localpv"
	"github.com/shoal-dev/shoal/node/controller/nodelifecycle"
	"github.com/shoal-dev/shoal/node/controller/priorityclass"
	"github.com/shoal-dev/shoal/node/controller/replicaset"
	"github.com/shoal-dev/shoal/node/controller/serviceaccount"
	"github.com/shoal-dev/shoal/node/controller/servicelb"
	"github.com/shoal-dev/shoal/node/controller/statefulset"
	"github.com/shoal-dev/shoal/node/events"
	"github.com/shoal-dev/shoal/node/rbac"
	"github.com/shoal-dev/shoal/node/state"
)

// controllerContext is what the leader's controllers are given.
func (n *Node) controllerContext(rec *events.Recorder) controller.Context {
	return controller.Context{Store: n.store, Proposer: n.proposer, Events: rec, Log: n.log}.WithDefaults()
}

// runControllers (a leader duty) runs the scheduler and the workload
// controllers until ctx ends (leadership lost). They keep no state outside
// the replica, so the next leader's start from the store where these stop.
func (n *Node) runControllers(ctx context.Context) {
	rec := events.New(events.Config{Proposer: n.proposer, Component: "shoal-controller-manager", Host: n.id.NodeName, Now: n.now, Log: n.log})
	sched := events.New(events.Config{Proposer: n.proposer, Component: defaultSchedulerName, Host: n.id.NodeName, Now: n.now, Log: n.log})
	cc := n.controllerContext(rec)
	lpCfg := localpv.DefaultConfig()
	// Where volumes live on a node with the default data dir; agents keep
	// the volumes Shoal provisions under their own data dir whatever it is.
	lpCfg.BaseDir = filepath.Join(DefaultDataDir, agentDir, "volumes")
	lp, err := localpv.New(cc, lpCfg)
	if err != nil {
		n.log.Error("local volume provisioner", "err", err)
		return
	}
	runs := []func(context.Context){
		nodelifecycle.New(cc, nodelifecycle.DefaultConfig()).Run,
		daemonset.New(cc).Run,
		statefulset.New(cc).Run,
		lp.Run,
		rec.Run, sched.Run,
		func(ctx context.Context) { n.runScheduler(ctx, sched) },
		replicaset.New(cc).Run,
		deployment.New(cc).Run,
		job.New(cc).Run,
		cronjob.New(cc).Run,
		gc.New(cc).Run,
		endpoints.New(cc).Run,
		servicelb.New(cc).Run,
		priorityclass.New(cc).Run, // system-cluster-critical, system-node-critical
		builtin.New(cc, "bootstrap RBAC policy", rbacBootstrap).Run,
		clusterroleaggregation.New(cc).Run,        // admin, edit, view and users' aggregated ClusterRoles
		serviceaccount.New(cc, n.creds.caPEM).Run, // every namespace's "default" and kube-root-ca.crt
		// The kubernetes service: the API port of this node's configuration
		// (nodes are expected to share it) behind the first service address.
		apiservice.New(cc, apiservice.Config{
			APIPort:   int32(n.cfg.APIPort),
			ClusterIP: apiservice.FirstIP(apiserver.DefaultServiceCIDR),
		}).Run,
	}
	var wg sync.WaitGroup
	for _, run := range runs {
		wg.Add(1)
		go func() { defer wg.Done(); run(ctx) }()
	}
	wg.Wait()
}

// rbacBootstrap is the built-in RBAC policy (cluster-admin for
// system:masters, admin/edit/view, discovery for every authenticated user),
// reconciled as kube-apiserver reconciles it: a stored bootstrap role or
// binding gains what this version adds unless it says autoupdate "false".
func rbacBootstrap() []builtin.Object {
	roles, bindings := rbac.Bootstrap()
	var out []builtin.Object
	for _, r := range roles {
		out = append(out, builtin.Object{Resource: rbac.ResourceClusterRoles, Object: r,
			Reconcile: func(stored state.Object) (state.Object, bool) {
				return rbac.ReconcileClusterRole(stored.(*rbacv1.ClusterRole), r)
			}})
	}
	for _, b := range bindings {
		out = append(out, builtin.Object{Resource: rbac.ResourceClusterRoleBindings, Object: b,
			Reconcile: func(stored state.Object) (state.Object, bool) {
				return rbac.ReconcileClusterRoleBinding(stored.(*rbacv1.ClusterRoleBinding), b)
			}})
	}
	return out
}
