package consensus

import (
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// membershipTimeout bounds handing a configuration change to the raft loop.
const membershipTimeout = 5 * time.Second

// AddNonvoter adds a server that replicates the log without voting, or
// updates the address of an existing server (keeping its suffrage). Leader
// only. A new server should be added as a non-voter first and promoted with
// AddVoter once it has caught up (see FetchStats), so quorum never waits on a
// server that is not ready.
func (n *Node) AddNonvoter(id, addr string) error {
	return n.changeMembership("adding non-voter", id, func(s *raft.Server) bool {
		return s != nil && string(s.Address) == addr
	}, func() raft.IndexFuture {
		return n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, membershipTimeout)
	})
}

// AddVoter adds a voter, promotes an existing non-voter, or updates a
// voter's address. Leader only. The call returns once the change is
// committed, which needs the new voter to be reachable when it makes up part
// of the new quorum.
func (n *Node) AddVoter(id, addr string) error {
	return n.changeMembership("adding voter", id, func(s *raft.Server) bool {
		return s != nil && s.Suffrage == raft.Voter && string(s.Address) == addr
	}, func() raft.IndexFuture {
		return n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, membershipTimeout)
	})
}

// DemoteVoter turns a voter into a non-voter. Leader only. Demoting a server
// that is absent or not a voter succeeds without change.
func (n *Node) DemoteVoter(id string) error {
	return n.changeMembership("demoting voter", id, func(s *raft.Server) bool {
		return s == nil || s.Suffrage != raft.Voter
	}, func() raft.IndexFuture {
		return n.raft.DemoteVoter(raft.ServerID(id), 0, membershipTimeout)
	})
}

// RemoveServer removes a server from the configuration. Leader only.
// Removing an absent server succeeds. A removed server stays up as a passive
// follower and can be added back.
func (n *Node) RemoveServer(id string) error {
	return n.changeMembership("removing server", id, func(s *raft.Server) bool {
		return s == nil
	}, func() raft.IndexFuture {
		return n.raft.RemoveServer(raft.ServerID(id), 0, membershipTimeout)
	})
}

// Servers returns the latest raft configuration (possibly not yet committed).
func (n *Node) Servers() ([]Server, error) {
	cfg, err := n.configuration()
	if err != nil {
		return nil, err
	}
	out := make([]Server, 0, len(cfg.Servers))
	for _, s := range cfg.Servers {
		out = append(out, Server{ID: string(s.ID), Address: string(s.Address), Voter: s.Suffrage == raft.Voter})
	}
	return out, nil
}

func (n *Node) configuration() (raft.Configuration, error) {
	if n.closed.Load() {
		return raft.Configuration{}, ErrShutdown
	}
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return raft.Configuration{}, fmt.Errorf("consensus: reading configuration: %w", err)
	}
	return f.Configuration(), nil
}

// changeMembership runs a configuration change on the leader unless done
// reports that the configuration already has the desired form.
func (n *Node) changeMembership(op, id string, done func(*raft.Server) bool, change func() raft.IndexFuture) error {
	if id == "" {
		return fmt.Errorf("consensus: %s: empty server ID", op)
	}
	if n.raft.State() != raft.Leader {
		if n.closed.Load() {
			return ErrShutdown
		}
		return n.notLeader()
	}
	cfg, err := n.configuration()
	if err != nil {
		return err
	}
	var cur *raft.Server
	for i := range cfg.Servers {
		if string(cfg.Servers[i].ID) == id {
			cur = &cfg.Servers[i]
		}
	}
	if done(cur) {
		return nil
	}
	switch err := change().Error(); {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader):
		return n.notLeader()
	case errors.Is(err, raft.ErrLeadershipLost):
		return fmt.Errorf("consensus: %s %s: %w: %w", op, id, ErrUnknownOutcome, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrShutdown
	default:
		return fmt.Errorf("consensus: %s %s: %w", op, id, err)
	}
}
