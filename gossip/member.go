package gossip

import (
	"fmt"
	"net"
	"strconv"
	"time"
)

// State is a member's liveness as this node last learned it.
type State int

const (
	// StateAlive: the member answers probes (or was heard alive more
	// recently than it was declared failed).
	StateAlive State = iota
	// StateSuspect is memberlist's intermediate state. It is defined for
	// completeness but never reported: memberlist v0.7 does not expose it
	// (the Node it hands out never has State set, hashicorp/memberlist#293,
	// and no delegate hears of suspicion), so a suspected member stays
	// StateAlive here until it is declared dead or refutes.
	StateSuspect
	// StateDead: the member stopped answering and was declared failed.
	StateDead
	// StateLeft: the member announced a graceful leave.
	StateLeft
)

func (s State) String() string {
	switch s {
	case StateAlive:
		return "alive"
	case StateSuspect:
		return "suspect"
	case StateDead:
		return "dead"
	case StateLeft:
		return "left"
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// Member is one member of the cluster as this node knows it. Values handed out
// by this package are copies; callers may keep and modify them.
type Member struct {
	Name  string // stable node ID (Config.Name of that node)
	Addr  net.IP // advertised gossip address
	Port  uint16 // advertised gossip port
	Meta  []byte // opaque node meta
	State State
	Since time.Time // when State last changed, by this node's clock
}

// Address returns the member's gossip address as "ip:port".
func (m Member) Address() string {
	return net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Port)))
}

func (m Member) String() string {
	return fmt.Sprintf("%s@%s(%s)", m.Name, m.Address(), m.State)
}

func (m Member) clone() Member {
	m.Addr = append(net.IP(nil), m.Addr...)
	if m.Meta != nil {
		m.Meta = append([]byte(nil), m.Meta...)
	}
	return m
}

// EventType says what happened to a member.
type EventType int

const (
	// EventJoin: a member became alive — new, or back after being dead or
	// left (possibly at a new address).
	EventJoin EventType = iota
	// EventUpdate: an alive member changed its meta.
	EventUpdate
	// EventLeave: a member left gracefully.
	EventLeave
	// EventDead: a member failed (stopped answering without leaving).
	EventDead
)

func (t EventType) String() string {
	switch t {
	case EventJoin:
		return "join"
	case EventUpdate:
		return "update"
	case EventLeave:
		return "leave"
	case EventDead:
		return "dead"
	}
	return "EventType(" + strconv.Itoa(int(t)) + ")"
}

// Event is a membership change. Member is the member's state right after the
// change.
type Event struct {
	Type   EventType
	Member Member
}

func (e Event) String() string {
	return e.Type.String() + " " + e.Member.String()
}
