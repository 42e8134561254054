package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"net"
	"sort"
	"testing"
	"time"

	"github.com/shoal-dev/shoal/consensus"
	"github.com/shoal-dev/shoal/gossip"
)

// fakeRaft is an in-memory raft configuration with call recording.
type fakeRaft struct {
	servers map[string]consensus.Server
	lastIdx map[string]uint64 // per server LastIndex (FetchStats by address)
	commit  uint64
	calls   []string
	// onRemove checks a safety invariant before each removal.
	onRemove func(id string)
}

func newFakeRaft() *fakeRaft {
	return &fakeRaft{servers: map[string]consensus.Server{}, lastIdx: map[string]uint64{}, commit: 1000}
}

func (f *fakeRaft) Servers() ([]consensus.Server, error) {
	var out []consensus.Server
	for _, s := range f.servers {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (f *fakeRaft) AddNonvoter(id, addr string) error {
	f.calls = append(f.calls, "nonvoter "+id+" "+addr)
	s, ok := f.servers[id]
	if !ok || !s.Voter {
		f.servers[id] = consensus.Server{ID: id, Address: addr}
		return nil
	}
	s.Address = addr
	f.servers[id] = s
	return nil
}

func (f *fakeRaft) AddVoter(id, addr string) error {
	f.calls = append(f.calls, "voter "+id+" "+addr)
	f.servers[id] = consensus.Server{ID: id, Address: addr, Voter: true}
	return nil
}

func (f *fakeRaft) DemoteVoter(id string) error {
	f.calls = append(f.calls, "demote "+id)
	s := f.servers[id]
	s.Voter = false
	f.servers[id] = s
	return nil
}

func (f *fakeRaft) RemoveServer(id string) error {
	f.calls = append(f.calls, "remove "+id)
	if f.onRemove != nil {
		f.onRemove(id)
	}
	delete(f.servers, id)
	return nil
}

func (f *fakeRaft) FetchStats(_ context.Context, addr string) (consensus.Stats, error) {
	for id, s := range f.servers {
		if s.Address == addr {
			return consensus.Stats{LastIndex: f.lastIdx[id]}, nil
		}
	}
	return consensus.Stats{}, errors.New("unreachable")
}

func (f *fakeRaft) Stats() consensus.Stats { return consensus.Stats{CommitIndex: f.commit} }

// fakePool is what gossip reports.
type fakePool map[string]gossip.State

func (p fakePool) members() []gossip.Member {
	var out []gossip.Member
	for id, st := range p {
		meta, _ := json.Marshal(gossipMetaV1{ID: id, Name: "name-" + id, Raft: raftAddr(id)})
		out = append(out, gossip.Member{Name: id, Addr: net.ParseIP("10.0.0.1"), State: st, Meta: meta})
	}
	return out
}

func raftAddr(id string) string { return id + ":7947" }

type harness struct {
	t    *testing.T
	m    *membership
	raft *fakeRaft
	pool fakePool
	now  time.Time
}

func newHarness(t *testing.T, voters int) *harness {
	h := &harness{t: t, raft: newFakeRaft(), pool: fakePool{"self": gossip.StateAlive}, now: time.Unix(1_000_000, 0)}
	h.raft.servers["self"] = consensus.Server{ID: "self", Address: raftAddr("self"), Voter: true}
	h.m = &membership{
		raft: h.raft, gossipMembers: func() []gossip.Member { return h.pool.members() }, self: "self",
		voters: voters, grace: 10 * time.Second, now: func() time.Time { return h.now },
		log: slog.New(slog.NewTextHandler(io.Discard, nil)), deadSince: map[string]time.Time{},
	}
	return h
}

// step runs one reconcile and returns the raft calls it made.
func (h *harness) step() []string {
	h.t.Helper()
	h.raft.calls = nil
	if err := h.m.reconcileRaft(context.Background()); err != nil {
		h.t.Fatalf("reconcile: %v", err)
	}
	return h.raft.calls
}

// settle runs reconcile until nothing changes (bounded).
func (h *harness) settle() {
	h.t.Helper()
	for i := 0; i < 50; i++ {
		if len(h.step()) == 0 {
			return
		}
	}
	h.t.Fatalf("membership did not settle: %+v", h.raft.servers)
}

func (h *harness) join(id string, caughtUp bool) {
	h.pool[id] = gossip.StateAlive
	if caughtUp {
		h.raft.lastIdx[id] = h.raft.commit
	}
}

func (h *harness) counts() (voters, nonvoters int) {
	for _, s := range h.raft.servers {
		if s.Voter {
			voters++
		} else {
			nonvoters++
		}
	}
	return
}

func TestMembershipGrowsToThreeThenFiveVoters(t *testing.T) {
	h := newHarness(t, DefaultVoters)
	h.join("b", false)
	if calls := h.step(); len(calls) != 1 || calls[0] != "nonvoter b b:7947" {
		t.Fatalf("new member: %v", calls)
	}
	if calls := h.step(); len(calls) != 0 {
		t.Fatalf("a non-voter that has not caught up was changed: %v", calls)
	}
	h.raft.lastIdx["b"] = h.raft.commit - 10
	h.settle()
	if v, nv := h.counts(); v != 2 || nv != 0 {
		t.Fatalf("after b caught up: %d voters %d non-voters", v, nv)
	}
	for _, id := range []string{"c", "d", "e", "f"} {
		h.join(id, true)
	}
	h.settle()
	if v, nv := h.counts(); v != 5 || nv != 1 {
		t.Fatalf("six nodes: %d voters %d non-voters, want 5/1", v, nv)
	}
}

func TestMembershipFixedVoterTarget(t *testing.T) {
	h := newHarness(t, 1)
	for _, id := range []string{"b", "c"} {
		h.join(id, true)
	}
	h.settle()
	if v, nv := h.counts(); v != 1 || nv != 2 {
		t.Fatalf("--voters 1: %d voters %d non-voters", v, nv)
	}
}

func TestMembershipReplacesDeadVoterAfterGrace(t *testing.T) {
	h := newHarness(t, DefaultVoters)
	for _, id := range []string{"b", "c", "d"} {
		h.join(id, true)
	}
	h.settle() // self, b, c voters; d non-voter... (3 healthy → target 3)
	if v, nv := h.counts(); v != 3 || nv != 1 {
		t.Fatalf("setup: %d/%d", v, nv)
	}
	var victim string
	for id, s := range h.raft.servers {
		if s.Voter && id != "self" {
			victim = id
			break
		}
	}
	h.pool[victim] = gossip.StateDead
	// Promote the healthy non-voter at once: healthy voters are short.
	if calls := h.step(); len(calls) != 1 || calls[0] != "voter d d:7947" {
		t.Fatalf("first step after death: %v", calls)
	}
	if calls := h.step(); len(calls) != 0 {
		t.Fatalf("dead voter removed before the grace period: %v", calls)
	}
	h.now = h.now.Add(11 * time.Second)
	if calls := h.step(); len(calls) != 1 || calls[0] != "remove "+victim {
		t.Fatalf("after the grace period: %v", calls)
	}
	if v, nv := h.counts(); v != 3 || nv != 0 {
		t.Fatalf("after replacement: %d/%d", v, nv)
	}
}

func TestMembershipNeverRemovesWithoutQuorum(t *testing.T) {
	h := newHarness(t, DefaultVoters)
	for _, id := range []string{"b", "c"} {
		h.join(id, true)
	}
	h.settle()
	h.pool["b"], h.pool["c"] = gossip.StateDead, gossip.StateDead
	h.now = h.now.Add(time.Hour)
	h.step()
	if calls := h.step(); len(calls) != 0 {
		t.Fatalf("with 1 of 3 voters healthy nothing may be removed: %v", calls)
	}
}

func TestMembershipAddressChangeAndLeave(t *testing.T) {
	h := newHarness(t, DefaultVoters)
	h.join("b", true)
	h.settle()
	h.raft.servers["b"] = consensus.Server{ID: "b", Address: "old:7947", Voter: true}
	if calls := h.step(); len(calls) != 1 || calls[0] != "voter b b:7947" {
		t.Fatalf("address change: %v", calls)
	}
	h.pool["b"] = gossip.StateLeft
	if calls := h.step(); len(calls) != 1 || calls[0] != "remove b" {
		t.Fatalf("left member: %v", calls)
	}
}

// TestMembershipQuorumProperty drives random failures, recoveries and joins
// and checks after every step that no voter was removed while fewer than a
// quorum of the remaining voters were healthy, and that the leader itself is
// never demoted or removed.
func TestMembershipQuorumProperty(t *testing.T) {
	for seed := int64(0); seed < 200; seed++ {
		rng := rand.New(rand.NewSource(seed))
		h := newHarness(t, DefaultVoters)
		h.raft.onRemove = func(id string) {
			voters, healthy := 0, 0
			for sid, s := range h.raft.servers {
				if !s.Voter || sid == id {
					continue
				}
				voters++
				if sid == "self" || h.pool[sid] == gossip.StateAlive {
					healthy++
				}
			}
			if id == "self" {
				t.Fatalf("seed %d: leader removed itself", seed)
			}
			if s := h.raft.servers[id]; s.Voter && healthy < voters/2+1 {
				t.Fatalf("seed %d: removing voter %s leaves %d healthy of %d voters", seed, id, healthy, voters)
			}
		}
		ids := []string{"b", "c", "d", "e", "f", "g"}
		for i := 0; i < 60; i++ {
			id := ids[rng.Intn(len(ids))]
			switch rng.Intn(4) {
			case 0:
				h.join(id, rng.Intn(2) == 0)
			case 1:
				if _, ok := h.pool[id]; ok {
					h.pool[id] = gossip.StateDead
				}
			case 2:
				h.raft.lastIdx[id] = h.raft.commit
			case 3:
				h.now = h.now.Add(time.Duration(rng.Intn(20)) * time.Second)
			}
			h.step()
			for _, c := range h.raft.calls {
				if c == "demote self" {
					t.Fatalf("seed %d: leader demoted", seed)
				}
			}
		}
	}
}

func TestAllocatePodCIDR(t *testing.T) {
	used := map[string]bool{}
	for i := 0; i < 3; i++ {
		c, err := allocatePodCIDR("10.42.0.0/16", used)
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("10.42.%d.0/24", i); c != want {
			t.Fatalf("allocation %d = %s, want %s", i, c, want)
		}
		used[c] = true
	}
	delete(used, "10.42.1.0/24")
	if c, _ := allocatePodCIDR("10.42.0.0/16", used); c != "10.42.1.0/24" {
		t.Fatalf("a freed /24 is reused first: %s", c)
	}
	full := map[string]bool{"10.9.0.0/24": true, "10.9.1.0/24": true}
	if _, err := allocatePodCIDR("10.9.0.0/23", full); err == nil {
		t.Fatal("exhausted pool allocated")
	}
	if _, err := allocatePodCIDR("10.9.0.0/25", nil); err == nil {
		t.Fatal("a pool smaller than /24 allocated")
	}
}

func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig()
	ok.AdvertiseAddr, ok.NodeName = "10.0.0.1", "n1"
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for name, mut := range map[string]func(*Config){
		"no address":         func(c *Config) { c.AdvertiseAddr = "" },
		"bad address":        func(c *Config) { c.AdvertiseAddr = "example.com" },
		"join without token": func(c *Config) { c.Join = "10.0.0.2" },
		"bad port":           func(c *Config) { c.APIPort = 70000 },
		"no voters":          func(c *Config) { c.Voters = 0 },
		"bad pod cidr":       func(c *Config) { c.PodCIDR = "nope" },
	} {
		c := ok
		mut(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestJoinLimiter(t *testing.T) {
	var l joinLimiter
	lim := l.get("10.0.0.9")
	for i := 0; i < 5; i++ {
		if !lim.Allow() {
			t.Fatalf("failure %d refused before the burst was spent", i)
		}
	}
	if l.get("10.0.0.9").Tokens() >= 1 {
		t.Fatal("a sixth failed attempt would be admitted at once")
	}
	if l.get("10.0.0.10").Tokens() < 1 {
		t.Fatal("another source is limited too")
	}
}
