package state

import (
	"context"
	"errors"
	"sync"
)

// Proposer commits ops through raft. Propose returns once the local replica
// has applied them (read-your-writes on the answering node). If an op failed,
// the error is its *ResultError (use IsCode); infrastructure failures (no
// quorum, no leader) are other errors. All ops of one call are atomic.
type Proposer interface {
	Propose(ctx context.Context, ops ...Op) ([]Result, error)
}

// CheckResults turns the results of an applied command into an error: the
// first op that failed, or nil.
func CheckResults(rs []Result) error {
	for _, r := range rs {
		if r.Code != CodeOK && r.Code != CodeAborted {
			return r.Err()
		}
	}
	for _, r := range rs {
		if err := r.Err(); err != nil {
			return err
		}
	}
	return nil
}

// LocalProposer applies ops straight to an FSM with no raft: for unit tests
// and tools. Every call is one log index.
type LocalProposer struct {
	mu     sync.Mutex
	fsm    *FSM
	sealer Sealer
	index  uint64
}

// NewLocalProposer returns a proposer that applies to fsm.
func NewLocalProposer(fsm *FSM) *LocalProposer {
	return &LocalProposer{fsm: fsm, sealer: fsm.sealer, index: fsm.store.AppliedIndex()}
}

// Propose encodes ops, applies them as the next log index and decodes the results.
func (p *LocalProposer) Propose(ctx context.Context, ops ...Op) ([]Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cmd, err := EncodeOps(ops, p.sealer)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	p.index++
	resp := p.fsm.Apply(p.index, cmd)
	p.mu.Unlock()
	rs, err := DecodeResults(resp)
	if err != nil {
		return nil, err
	}
	return rs, CheckResults(rs)
}

// ErrUnavailable is wrapped by proposers when a write cannot be committed:
// no leader reachable or no quorum (HTTP 503 in the API).
var ErrUnavailable = errors.New("cluster unavailable: no quorum")
