package consensus

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
)

// forwarder sends a follower's proposals to the leader in batches: the
// commands that queue up while one batch is out go together in the next
// request (connForwardBatch), and its answer carries every command's result.
//
// One forward request per command cost the leader a goroutine, a queue
// hand-off and an answer frame per command, and the follower a pending
// request each. Batching also lengthens the leader's rounds under load
// through a follower, so its entries carry more commands: the fsyncs,
// AppendEntries and context switches of a round are shared by more writes.
//
// There is no goroutine of its own: the caller that finds no batch out sends
// its command at once (a lone write goes out as before); callers arriving
// while a batch is out queue, and when the answer is in, the first of them
// sends the next batch with everything queued by then. A caller whose ctx
// ends while queued withdraws (certainly not sent: retry); once its command
// was taken into a batch its outcome is unknown.
type forwarder struct {
	rpc *rpcClient
	ctx context.Context // the node's: ends at Shutdown

	mu     sync.Mutex
	queues map[string]*fwdQueue // guarded by mu; per leader address (a handful over a node's life)
}

func newForwarder(ctx context.Context, rpc *rpcClient) *forwarder {
	return &forwarder{rpc: rpc, ctx: ctx, queues: make(map[string]*fwdQueue)}
}

// Limits of one forward batch; a larger single command still goes alone.
const (
	maxForwardCommands = 512
	maxForwardBytes    = 1 << 20
)

type fwdQueue struct {
	mu      sync.Mutex
	waiting []*fwdCall // guarded by mu
	busy    bool       // guarded by mu: a batch is out or being sent
}

// fwdCall states, guarded by the queue's mu.
const (
	fwdQueued    = iota // in waiting
	fwdTaken            // in a batch; its result will arrive on done
	fwdLeading          // chosen to send the next batch; told on done
	fwdWithdrawn        // its caller gave up while it was queued
)

type fwdCall struct {
	ctx   context.Context
	cmd   []byte
	state int
	done  chan fwdMsg // buffered 1: exactly one message once taken or leading
}

type fwdMsg struct {
	res  result
	lead bool // send the next batch (res is unset)
}

func (f *forwarder) queue(addr string) *fwdQueue {
	f.mu.Lock()
	defer f.mu.Unlock()
	q := f.queues[addr]
	if q == nil {
		q = &fwdQueue{}
		f.queues[addr] = q
	}
	return q
}

// propose forwards cmd to the leader at addr.
func (f *forwarder) propose(ctx context.Context, addr string, cmd []byte) result {
	q := f.queue(addr)
	c := &fwdCall{ctx: ctx, cmd: cmd, done: make(chan fwdMsg, 1)}
	q.mu.Lock()
	if !q.busy {
		q.busy = true
		c.state = fwdLeading
		q.mu.Unlock()
		return f.send(q, addr, c)
	}
	q.waiting = append(q.waiting, c)
	q.mu.Unlock()

	var m fwdMsg
	select {
	case m = <-c.done:
	case <-ctx.Done():
		q.mu.Lock()
		switch c.state {
		case fwdQueued:
			c.state = fwdWithdrawn
			q.remove(c)
			q.mu.Unlock()
			return retryResult(ctx.Err())
		case fwdTaken:
			q.mu.Unlock()
			return unknownResult(fmt.Errorf("forwarding to %s: %w", addr, ctx.Err()))
		}
		q.mu.Unlock()
		m = <-c.done // leading: the others wait for this caller to send
	}
	if m.lead {
		return f.send(q, addr, c)
	}
	return m.res
}

// remove drops c from waiting; mu is held.
func (q *fwdQueue) remove(c *fwdCall) {
	for i, w := range q.waiting {
		if w == c {
			q.waiting = append(q.waiting[:i], q.waiting[i+1:]...)
			return
		}
	}
}

// send forwards lead's command with everything queued behind it, hands the
// results out, passes the sending on to the first caller that queued
// meanwhile, and returns lead's result.
func (f *forwarder) send(q *fwdQueue, addr string, lead *fwdCall) result {
	batch, size := []*fwdCall{lead}, len(lead.cmd)
	q.mu.Lock()
	for len(q.waiting) > 0 && len(batch) < maxForwardCommands && size+len(q.waiting[0].cmd) <= maxForwardBytes {
		w := q.waiting[0]
		q.waiting[0] = nil
		q.waiting = q.waiting[1:]
		w.state = fwdTaken
		batch = append(batch, w)
		size += len(w.cmd)
	}
	q.mu.Unlock()

	// A command whose caller gave up before it went out stays behind:
	// certainly not applied, as when the caller withdraws.
	results := make([]result, len(batch))
	var live []*fwdCall
	var at []int // live[j] is batch[at[j]]
	for i, c := range batch {
		if err := c.ctx.Err(); err != nil {
			results[i] = retryResult(err)
			continue
		}
		live, at = append(live, c), append(at, i)
	}
	if len(live) > 0 {
		for j, r := range f.call(addr, live) {
			results[at[j]] = r
		}
	}
	for i, c := range batch[1:] {
		c.done <- fwdMsg{res: results[i+1]}
	}

	q.mu.Lock()
	if len(q.waiting) > 0 {
		next := q.waiting[0]
		q.waiting[0] = nil
		q.waiting = q.waiting[1:]
		next.state = fwdLeading
		next.done <- fwdMsg{lead: true}
	} else {
		q.busy = false
	}
	q.mu.Unlock()
	return results[0]
}

// call sends one batch and returns a result per command.
func (f *forwarder) call(addr string, batch []*fwdCall) []result {
	results := make([]result, len(batch))
	all := func(r result) []result {
		for i := range results {
			results[i] = r
		}
		return results
	}
	// The request lives as long as its longest-lived command: each
	// command's own deadline travels with it (and its caller stops waiting
	// at it), and the shutdown of this node ends the rest.
	ctx, latest := f.ctx, time.Time{}
	bounded := true
	for _, c := range batch {
		dl, ok := c.ctx.Deadline()
		if !ok {
			bounded = false
			break
		}
		if dl.After(latest) {
			latest = dl
		}
	}
	if bounded {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(f.ctx, latest)
		defer cancel()
	}
	rp, sent, err := f.rpc.call(ctx, addr, connForwardBatch, encodeForwardBatch(batch, time.Now()))
	if err != nil {
		if !sent {
			return all(retryResult(err))
		}
		return all(unknownResult(fmt.Errorf("forwarding to %s: %w", addr, err)))
	}
	if rp.status != statusOK {
		return all(decodeResult(addr, rp))
	}
	answers, err := decodeForwardAnswers(rp.body, len(batch))
	if err != nil {
		// The leader acted on the batch but its answer is unreadable.
		return all(unknownResult(&remoteError{addr: addr, msg: err.Error()}))
	}
	for i, a := range answers {
		if len(a) == 0 {
			results[i] = unknownResult(&remoteError{addr: addr, msg: "empty answer"})
			continue
		}
		results[i] = decodeResult(addr, reply{status: a[0], body: a[1:]})
	}
	return results
}

// A forward batch request body is
//
//	uvarint count | count × (uvarint budget-ms | uvarint length | command)
//
// with each command's own budget (0 = no deadline), counted from the
// request's sent-at; the request header's budget is 0. Its answer is
//
//	statusOK | uvarint count | count × (uvarint length | response)
//
// with a response per command as a connForward request gets, in order.
func encodeForwardBatch(batch []*fwdCall, now time.Time) []byte {
	size := binary.MaxVarintLen64
	for _, c := range batch {
		size += 2*binary.MaxVarintLen64 + len(c.cmd)
	}
	buf := binary.AppendUvarint(make([]byte, 0, size), uint64(len(batch)))
	for _, c := range batch {
		var budget uint64
		if dl, ok := c.ctx.Deadline(); ok {
			budget = uint64(min(max(dl.Sub(now).Milliseconds(), 1), math.MaxUint32))
		}
		buf = binary.AppendUvarint(buf, budget)
		buf = binary.AppendUvarint(buf, uint64(len(c.cmd)))
		buf = append(buf, c.cmd...)
	}
	return buf
}

// forwardedCommand is one command of a decoded forward batch.
type forwardedCommand struct {
	budget uint32 // ms; 0 = none
	cmd    []byte // aliases the request
}

func decodeForwardBatch(b []byte) ([]forwardedCommand, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 {
		return nil, errors.New("bad command count")
	}
	b = b[k:]
	if n == 0 || n > uint64(len(b))/2 { // each command takes at least two bytes
		return nil, fmt.Errorf("bad command count %d", n)
	}
	out := make([]forwardedCommand, 0, n)
	for i := range n {
		budget, k := binary.Uvarint(b)
		if k <= 0 || budget > math.MaxUint32 {
			return nil, fmt.Errorf("command %d: bad budget", i)
		}
		b = b[k:]
		l, k := binary.Uvarint(b)
		if k <= 0 || l > uint64(len(b)-k) {
			return nil, fmt.Errorf("command %d: bad length", i)
		}
		b = b[k:]
		out = append(out, forwardedCommand{budget: uint32(budget), cmd: b[:l:l]})
		b = b[l:]
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%d trailing bytes", len(b))
	}
	return out, nil
}

func encodeForwardAnswers(answers [][]byte) []byte {
	return appendItems([]byte{statusOK}, answers)
}

// decodeForwardAnswers decodes the body of an answer (after its status
// byte) to a batch of want commands.
func decodeForwardAnswers(b []byte, want int) ([][]byte, error) {
	answers, err := decodeBatch(b)
	if err != nil {
		return nil, fmt.Errorf("forward answer: %w", err)
	}
	if len(answers) != want {
		return nil, fmt.Errorf("forward answer: %d results for %d commands", len(answers), want)
	}
	return answers, nil
}
