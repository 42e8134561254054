package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/shoal-dev/shoal/consensus"
	"github.com/shoal-dev/shoal/gossip"
	"github.com/shoal-dev/shoal/node/state"
)

// membership is the leader's view of who is in the cluster. Gossip proposes,
// raft decides: only the leader changes the raft configuration, and only
// from what gossip reports.
type membership struct {
	n    *Node
	raft raftControl
	// gossipMembers lists what gossip knows (every state).
	gossipMembers func() []gossip.Member
	self          string
	voters        int // configured target
	grace         time.Duration
	now           func() time.Time
	log           *slog.Logger
	// deadSince remembers when a raft server was first seen not alive, so a
	// voter is replaced only after the grace period.
	deadSince map[string]time.Time
}

// raftControl is the part of consensus.Node the membership logic drives; a
// fake stands in for it in unit tests.
type raftControl interface {
	Servers() ([]consensus.Server, error)
	AddNonvoter(id, addr string) error
	AddVoter(id, addr string) error
	DemoteVoter(id string) error
	RemoveServer(id string) error
	FetchStats(ctx context.Context, addr string) (consensus.Stats, error)
	Stats() consensus.Stats
}

func newMembership(n *Node) *membership {
	return &membership{
		n: n, raft: n.raft, gossipMembers: n.gossip.Members, self: n.id.NodeID,
		voters: n.cfg.Voters, grace: n.cfg.DeadVoterGrace, now: n.now, log: n.log,
		deadSince: map[string]time.Time{},
	}
}

// memberView is one gossip member with its decoded meta.
type memberView struct {
	meta  gossipMetaV1
	state gossip.State
	since time.Time
}

func (m *membership) members() map[string]memberView {
	out := map[string]memberView{}
	for _, gm := range m.gossipMembers() {
		meta, ok := parseMeta(gm.Meta)
		if !ok {
			continue
		}
		out[gm.Name] = memberView{meta: meta, state: gm.State, since: gm.Since}
	}
	return out
}

// voterTarget is how many voters the cluster should have with `healthy`
// healthy nodes.
func (m *membership) voterTarget(healthy int) int {
	t := m.voters
	if t == DefaultVoters && healthy >= 5 {
		t = 5
	}
	return t
}

func (m *membership) reconcile(ctx context.Context) {
	if err := m.reconcileRaft(ctx); err != nil && !errors.Is(err, consensus.ErrNotLeader) {
		m.log.Warn("membership: raft configuration", "err", err)
	}
	if err := m.reconcileNodes(ctx); err != nil && !errors.Is(err, context.Canceled) {
		m.log.Warn("membership: node objects", "err", err)
	}
}

// reconcileRaft makes one step toward the target configuration per call:
// add alive members as non-voters, fix changed addresses, remove members that
// left, promote caught-up non-voters while voters are short, replace voters
// dead longer than the grace period, demote surplus voters.
func (m *membership) reconcileRaft(ctx context.Context) error {
	r := m.raft
	log := m.log
	servers, err := r.Servers()
	if err != nil {
		return err
	}
	members := m.members()
	inConfig := map[string]consensus.Server{}
	for _, s := range servers {
		inConfig[s.ID] = s
	}
	// 1. New members and changed addresses.
	for id, mv := range members {
		if mv.state != gossip.StateAlive {
			continue
		}
		s, ok := inConfig[id]
		switch {
		case !ok:
			log.Info("membership: adding non-voter", "node", mv.meta.Name, "id", id, "addr", mv.meta.Raft)
			return r.AddNonvoter(id, mv.meta.Raft)
		case s.Address != mv.meta.Raft:
			log.Info("membership: node address changed", "node", mv.meta.Name, "from", s.Address, "to", mv.meta.Raft)
			if s.Voter {
				return r.AddVoter(id, mv.meta.Raft)
			}
			return r.AddNonvoter(id, mv.meta.Raft)
		}
	}
	// 2. Members that left for good.
	for id, mv := range members {
		if _, ok := inConfig[id]; ok && mv.state == gossip.StateLeft && id != m.self {
			log.Info("membership: removing node that left", "node", mv.meta.Name, "id", id)
			return r.RemoveServer(id)
		}
	}
	alive := func(id string) bool {
		if id == m.self {
			return true
		}
		mv, ok := members[id]
		return ok && mv.state == gossip.StateAlive
	}
	now := m.now()
	var voters, healthyVoters, nonvoters []consensus.Server
	healthy := 0
	for _, s := range servers {
		if alive(s.ID) {
			delete(m.deadSince, s.ID)
			healthy++
		} else if _, ok := m.deadSince[s.ID]; !ok {
			m.deadSince[s.ID] = now
		}
		switch {
		case s.Voter:
			voters = append(voters, s)
			if alive(s.ID) {
				healthyVoters = append(healthyVoters, s)
			}
		case alive(s.ID):
			nonvoters = append(nonvoters, s)
		}
	}
	target := m.voterTarget(healthy)
	sort.Slice(nonvoters, func(i, j int) bool { return nonvoters[i].ID < nonvoters[j].ID })

	// 3. Too few healthy voters: promote a caught-up non-voter.
	if len(healthyVoters) < target {
		for _, s := range nonvoters {
			if m.caughtUp(ctx, s) {
				log.Info("membership: promoting to voter", "id", s.ID, "voters", len(voters)+1, "target", target)
				return r.AddVoter(s.ID, s.Address)
			}
		}
	}
	// 4. Voters dead past the grace period: remove them once that leaves at
	// least a quorum of healthy voters in the new configuration, and prefer
	// to do it after a replacement was promoted (step 3).
	for _, s := range voters {
		since, dead := m.deadSince[s.ID]
		if !dead || now.Sub(since) < m.grace {
			continue
		}
		remaining := len(voters) - 1
		if len(healthyVoters) >= remaining/2+1 {
			log.Info("membership: removing dead voter", "id", s.ID, "dead for", now.Sub(since).Round(time.Second))
			return r.RemoveServer(s.ID)
		}
	}
	// 5. Surplus healthy voters (e.g. after voters came back): demote one.
	if len(voters) > target && len(healthyVoters) > target {
		for i := len(healthyVoters) - 1; i >= 0; i-- {
			if s := healthyVoters[i]; s.ID != m.self {
				log.Info("membership: demoting surplus voter", "id", s.ID, "voters", len(voters), "target", target)
				return r.DemoteVoter(s.ID)
			}
		}
	}
	return nil
}

// caughtUp reports whether a non-voter's log is close to the leader's.
func (m *membership) caughtUp(ctx context.Context, s consensus.Server) bool {
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	st, err := m.raft.FetchStats(cctx, s.Address)
	if err != nil {
		return false
	}
	own := m.raft.Stats()
	return st.LastIndex+256 >= own.CommitIndex
}

// annHollow marks a bench-only hollow Node (see reconcileNodes).
const annHollow = "shoal.dev/hollow"

// reconcileNodes keeps the Ready condition of every Node object in step with
// gossip (written only when it changes), allocates pod CIDRs, and removes
// the Node objects of members that left.
func (m *membership) reconcileNodes(ctx context.Context) error {
	n := m.n
	members := m.members()
	objs, _ := n.store.List("nodes", "")
	var ops []state.Op
	used := map[string]bool{}
	for _, o := range objs {
		if cidr := o.(*corev1.Node).Spec.PodCIDR; cidr != "" {
			used[cidr] = true
		}
	}
	for _, o := range objs {
		node := o.(*corev1.Node)
		// shoal.dev/hollow: "true" marks a Node with no agent behind it,
		// registered by the benchmark driver (e2e/bench, hollow nodes for
		// scheduling throughput); it owns the Node's Ready condition.
		// Bench-only: real nodes never carry it.
		if node.Annotations[annHollow] == "true" {
			continue
		}
		id := node.Annotations[annNodeID]
		if id == "" {
			continue
		}
		mv, known := members[id]
		if id == n.id.NodeID {
			mv, known = memberView{state: gossip.StateAlive, since: n.now()}, true
		}
		if known && mv.state == gossip.StateLeft {
			ops = append(ops, state.Delete(nodeKind, "", node.Name, 0, string(node.UID)))
			continue
		}
		status, reason, msg := corev1.ConditionUnknown, "NodeStatusUnknown", "Shoal gossip lost contact with the node."
		if known && mv.state == gossip.StateAlive {
			status, reason, msg = corev1.ConditionTrue, "NodeReady", "Node is alive in gossip."
		}
		var upd *corev1.Node
		if cur := readyCondition(node); cur == nil || cur.Status != status {
			upd = node.DeepCopy()
			setReady(upd, status, reason, msg, n.now())
		}
		if node.Spec.PodCIDR == "" {
			cidr, err := allocatePodCIDR(n.cfg.PodCIDR, used)
			if err != nil {
				n.log.Warn("membership: pod CIDR", "node", node.Name, "err", err)
			} else {
				used[cidr] = true
				if upd == nil {
					upd = node.DeepCopy()
				}
				upd.Spec.PodCIDR, upd.Spec.PodCIDRs = cidr, []string{cidr}
			}
		}
		if upd != nil {
			ops = append(ops, state.Update(upd, rvOf(node)))
		}
	}
	if len(ops) == 0 {
		return nil
	}
	// One op per command: a conflict on one node must not hold up the others.
	for _, op := range ops {
		if _, err := n.proposer.Propose(ctx, op); err != nil && !state.IsCode(err, state.CodeConflict) && !state.IsCode(err, state.CodeNotFound) {
			return err
		}
	}
	return nil
}

func readyCondition(node *corev1.Node) *corev1.NodeCondition {
	for i := range node.Status.Conditions {
		if node.Status.Conditions[i].Type == corev1.NodeReady {
			return &node.Status.Conditions[i]
		}
	}
	return nil
}

func setReady(node *corev1.Node, status corev1.ConditionStatus, reason, msg string, now time.Time) {
	t := metav1.NewTime(now)
	c := readyCondition(node)
	if c == nil {
		node.Status.Conditions = append(node.Status.Conditions, corev1.NodeCondition{Type: corev1.NodeReady})
		c = &node.Status.Conditions[len(node.Status.Conditions)-1]
	}
	c.Status, c.Reason, c.Message = status, reason, msg
	c.LastHeartbeatTime, c.LastTransitionTime = t, t
}

// allocatePodCIDR returns the lowest /24 of pool not in used.
func allocatePodCIDR(pool string, used map[string]bool) (string, error) {
	p, err := netip.ParsePrefix(pool)
	if err != nil {
		return "", err
	}
	if p.Bits() > 24 || !p.Addr().Is4() {
		return "", fmt.Errorf("pod CIDR %s cannot hold /24s", pool)
	}
	base := p.Masked().Addr().As4()
	count := 1 << (24 - p.Bits())
	for i := 0; i < count; i++ {
		a := base
		v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8
		v += uint32(i) << 8
		cidr := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), 0}), 24).String()
		if !used[cidr] {
			return cidr, nil
		}
	}
	return "", fmt.Errorf("pod CIDR %s is exhausted", pool)
}
