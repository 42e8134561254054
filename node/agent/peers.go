package agent

import (
	"context"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/shoal-dev/shoal/node/podnet"
	"github.com/shoal-dev/shoal/node/state"
)

// syncPeers keeps the routes to the other nodes' pod CIDRs in step with
// the Node objects of the replica: at once when a node's address or pod
// CIDR changes, and every 30 s anyway (SetPeers also repairs the bridge and
// the masquerade table).
func (a *Agent) syncPeers(ctx context.Context) {
	_, _, w := a.cfg.Store.ListAndWatch(state.WatchOptions{Resource: "nodes"})
	defer func() { w.Stop() }()
	var last []podnet.Peer
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	for {
		peers := a.peers()
		if !slices.Equal(peers, last) || last == nil {
			if err := a.cfg.Network.SetPeers(ctx, peers); err != nil && ctx.Err() == nil {
				a.log.Warn("agent: pod routes to other nodes", "err", err)
			} else {
				last = peers
			}
		}
		select {
		case <-ctx.Done():
			return
		case _, ok := <-w.Events():
			if !ok {
				_, _, w = a.cfg.Store.ListAndWatch(state.WatchOptions{Resource: "nodes"})
			}
		case <-tick.C:
			last = nil
		}
	}
}

// peers lists every other node with a pod CIDR, by name.
func (a *Agent) peers() []podnet.Peer {
	objs, _ := a.cfg.Store.List("nodes", "")
	out := []podnet.Peer{}
	for _, o := range objs {
		n := o.(*corev1.Node)
		if n.Name == a.cfg.NodeName || n.Spec.PodCIDR == "" {
			continue
		}
		ip := nodeInternalIP(n)
		if ip == "" {
			continue
		}
		out = append(out, podnet.Peer{NodeIP: ip, PodCIDR: n.Spec.PodCIDR})
	}
	slices.SortFunc(out, func(x, y podnet.Peer) int {
		switch {
		case x.PodCIDR < y.PodCIDR:
			return -1
		case x.PodCIDR > y.PodCIDR:
			return 1
		}
		return 0
	})
	return out
}

func nodeInternalIP(n *corev1.Node) string {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	return ""
}
