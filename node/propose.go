package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/shoal-dev/shoal/consensus"
	"github.com/shoal-dev/shoal/node/pki"
	"github.com/shoal-dev/shoal/node/state"
)

// raftProposer commits ops through raft from any node (followers forward to
// the leader inside consensus) and answers once the local replica applied
// them, so a client reading from this node sees its own write.
type raftProposer struct {
	raft    *consensus.Node
	store   *state.Store
	sealer  state.Sealer
	timeout time.Duration
	metrics *metrics
}

// proposeDeadlines bounds proposals (see Propose).
var proposeDeadlines = consensus.NewDeadlines(10 * time.Millisecond)

func (p *raftProposer) Propose(ctx context.Context, ops ...state.Op) ([]state.Result, error) {
	cmd, err := state.EncodeOps(ops, p.sealer)
	if err != nil {
		return nil, err
	}
	// A write that cannot reach a quorum fails within p.timeout, whatever
	// longer deadline the client asked for (?timeout=30s): a clear 503 soon
	// beats a hung request. When nothing can cancel ctx (the API's writes,
	// see apiserver's writeContext) the deadline is shared with the writes
	// started in the same few milliseconds: one timer for all, not one each.
	start := time.Now()
	if ctx.Done() == nil {
		ctx = proposeDeadlines.Before(start.Add(p.timeout))
	} else {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.timeout)
		defer cancel()
	}
	idx, resp, err := p.raft.Propose(ctx, cmd)
	if err != nil {
		p.metrics.proposeErrors.Inc()
		if errors.Is(err, consensus.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, consensus.ErrShutdown) {
			return nil, fmt.Errorf("%w: %v", state.ErrUnavailable, err)
		}
		return nil, err
	}
	if err := p.store.WaitApplied(ctx, idx); err != nil {
		return nil, fmt.Errorf("%w: committed but not yet applied on this node: %v", state.ErrUnavailable, err)
	}
	p.metrics.applyLatency.Observe(time.Since(start).Seconds())
	rs, err := state.DecodeResults(resp)
	if err != nil {
		return nil, err
	}
	return rs, state.CheckResults(rs)
}

// sealer adapts the keyring to state.Sealer.
type sealer struct{ k *pki.Keyring }

func (s sealer) Seal(p, aad []byte) []byte          { return s.k.Seal(p, aad) }
func (s sealer) Open(b, aad []byte) ([]byte, error) { return s.k.Open(b, aad) }
