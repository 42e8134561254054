package consensus

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// serverConn is the server side of one request connection.
type serverConn struct {
	conn net.Conn
	w    *frameWriter

	mu        sync.Mutex
	lastID    uint64 // guarded by mu: highest request id read for processing
	goingAway bool   // guarded by mu: no request is accepted any more

	// baseline is the smallest receive−sent-at seen (ms): clock skew plus
	// the fastest transit. Only the read loop uses it.
	baseline    int64
	hasBaseline bool
}

// transit estimates how long a request sent at sentAtMs (the peer's clock)
// spent on the way, relative to the fastest request seen on this connection.
func (sc *serverConn) transit(sentAtMs int64) time.Duration {
	offset := time.Now().UnixMilli() - sentAtMs
	if !sc.hasBaseline || offset < sc.baseline {
		sc.baseline, sc.hasBaseline = offset, true
	}
	return time.Duration(offset-sc.baseline) * time.Millisecond
}

// admit reports whether a request just read may be processed.
func (sc *serverConn) admit(id uint64) bool {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.goingAway {
		return false
	}
	sc.lastID = max(sc.lastID, id)
	return true
}

// goAway tells the client which requests will never be processed. After it,
// admit refuses everything.
func (sc *serverConn) goAway() {
	sc.mu.Lock()
	if sc.goingAway {
		sc.mu.Unlock()
		return
	}
	sc.goingAway = true
	last := sc.lastID
	sc.mu.Unlock()
	sc.write(0, encodeGoAway(last), goAwayWriteTimeout)
}

func (sc *serverConn) write(id uint64, payload []byte, timeout time.Duration) {
	if err := sc.w.write(id, payload, timeout); err != nil {
		_ = sc.conn.Close()
	}
}

// goAwayWriteTimeout bounds writing a GOAWAY frame.
const goAwayWriteTimeout = time.Second

// serveRPC serves one request connection of the given kind until it breaks,
// the peer goes idle or the node shuts down. It closes conn.
func (n *Node) serveRPC(kind byte, conn net.Conn) {
	sc := &serverConn{conn: conn, w: newFrameWriter(conn)}
	if !n.addServing(sc) {
		sc.goAway() // shutting down: nothing sent on this connection will be read
		_ = conn.Close()
		return
	}
	// On Shutdown the stream layer closes conn, which ends the read loop; in
	// between, handlers still answer requests admitted before the GOAWAY.
	ctx, cancel := context.WithCancel(n.ctx)
	var handlers sync.WaitGroup
	defer func() {
		n.removeServing(sc)
		cancel()
		_ = conn.Close()
		handlers.Wait()
	}()
	sem := make(chan struct{}, maxRequestsPerConn)
	br := bufio.NewReaderSize(conn, 64<<10)
	for {
		_ = conn.SetReadDeadline(time.Now().Add(serverIdleTimeout))
		id, payload, err := readFrame(br)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				sc.goAway() // idle: let the client know nothing is lost
			} else if !errors.Is(err, io.EOF) && ctx.Err() == nil {
				n.logger.Debug("request connection closed", "remote", conn.RemoteAddr(), "error", err)
			}
			return
		}
		if id == 0 || !sc.admit(id) {
			return
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		var transit time.Duration
		if len(payload) >= requestHeaderLen {
			transit = sc.transit(int64(binary.BigEndian.Uint64(payload[4:])))
		}
		handlers.Go(func() {
			defer func() { <-sem }()
			sc.write(id, n.handleRequest(ctx, kind, payload, transit), rpcWriteTimeout)
		})
	}
}

// addServing registers a request connection; it fails after Shutdown began.
func (n *Node) addServing(sc *serverConn) bool {
	n.servingMu.Lock()
	defer n.servingMu.Unlock()
	if n.serving == nil {
		return false
	}
	n.serving[sc] = struct{}{}
	return true
}

func (n *Node) removeServing(sc *serverConn) {
	n.servingMu.Lock()
	defer n.servingMu.Unlock()
	delete(n.serving, sc)
}

// goAwayAll sends GOAWAY on every request connection and refuses new ones.
func (n *Node) goAwayAll() {
	n.servingMu.Lock()
	conns := n.serving
	n.serving = nil
	n.servingMu.Unlock()
	var wg sync.WaitGroup
	for sc := range conns {
		wg.Go(sc.goAway)
	}
	wg.Wait()
}

// handleRequest answers one request that spent transit on the way; the
// result is a response payload.
func (n *Node) handleRequest(ctx context.Context, kind byte, payload []byte, transit time.Duration) []byte {
	if len(payload) < requestHeaderLen {
		return encodeStatus(statusFailed, "short request")
	}
	if budget := binary.BigEndian.Uint32(payload); budget > 0 {
		// Answer a little before the caller gives up, so that a command that
		// could not be committed in time comes back as certainly not applied.
		left := time.Duration(budget)*time.Millisecond*9/10 - transit
		if left <= 0 {
			return expiredInTransit(transit, budget)
		}
		// A shared deadline rather than a timer per request. It does not end
		// with the connection: a handler whose caller went away finishes its
		// proposal and then fails to write the answer; Shutdown still ends it
		// through n.ctx.
		ctx = defaultDeadlines.Before(time.Now().Add(left))
	}
	body := payload[requestHeaderLen:]
	switch kind {
	case connForward:
		if n.raft.State() != raft.Leader {
			return encodeNotLeader(n.notLeader())
		}
		return encodeResult(n.proposeLocal(ctx, body, true), true)
	case connForwardBatch:
		if n.raft.State() != raft.Leader {
			return encodeNotLeader(n.notLeader())
		}
		return n.proposeForwarded(ctx, body, transit)
	case connReadIndex:
		if n.raft.State() != raft.Leader {
			return encodeNotLeader(n.notLeader())
		}
		return encodeResult(n.readIndexLocal(ctx), false)
	case connStats:
		b, err := json.Marshal(n.Stats())
		if err != nil {
			return encodeStatus(statusFailed, err.Error())
		}
		return append([]byte{statusOK}, b...)
	default:
		return encodeStatus(statusFailed, "unknown request kind")
	}
}

// expiredInTransit answers a request (or a batched command) that spent its
// budget on the way: certainly not applied, and the caller has given up.
func expiredInTransit(transit time.Duration, budget uint32) []byte {
	return encodeStatus(statusFailed, fmt.Sprintf("request expired in transit (delayed %v, budget %dms)", transit, budget))
}

// proposeForwarded proposes a follower's forward batch (see forwarder) and
// answers with every command's result. Each command has its own budget, as
// a single forwarded request has; commands without one end with ctx (the
// connection's).
func (n *Node) proposeForwarded(ctx context.Context, body []byte, transit time.Duration) []byte {
	cmds, err := decodeForwardBatch(body)
	if err != nil {
		return encodeStatus(statusFailed, "bad forward batch: "+err.Error())
	}
	n.fwdBatches.Add(1)
	n.fwdCommands.Add(uint64(len(cmds)))
	now := time.Now()
	answers := make([][]byte, len(cmds))
	ctxs := make([]context.Context, len(cmds))
	ps := make([]*proposal, len(cmds))
	// Queue them all first, so that they reach the batcher together.
	for i, c := range cmds {
		ctxs[i] = ctx
		if c.budget > 0 {
			left := time.Duration(c.budget)*time.Millisecond*9/10 - transit
			if left <= 0 {
				answers[i] = expiredInTransit(transit, c.budget)
				continue
			}
			ctxs[i] = defaultDeadlines.Before(now.Add(left))
		}
		p := newProposal(c.cmd, true)
		if r, ok := n.enqueue(ctxs[i], p); !ok {
			answers[i] = encodeResult(r, true)
			continue
		}
		ps[i] = p
	}
	for i, p := range ps {
		if p != nil {
			answers[i] = encodeResult(n.await(ctxs[i], p), true)
		}
	}
	return encodeForwardAnswers(answers)
}

// encodeResult encodes a proposal (withResp) or read-index result.
func encodeResult(r result, withResp bool) []byte {
	switch r.outcome {
	case outcomeOK:
		buf := binary.BigEndian.AppendUint64([]byte{statusOK}, r.index)
		if withResp {
			buf = append(buf, r.resp...)
		}
		return buf
	case outcomeRetry:
		var nle *NotLeaderError
		if errors.As(r.err, &nle) {
			return encodeNotLeader(nle)
		}
		return encodeStatus(statusRetry, r.err.Error())
	case outcomeUnknown:
		return encodeStatus(statusUnknown, r.err.Error())
	default:
		return encodeStatus(statusFailed, r.err.Error())
	}
}

// decodeResult decodes a proposal or read-index response from addr.
func decodeResult(addr string, rp reply) result {
	msg := func() error { return &remoteError{addr: addr, msg: string(rp.body)} }
	switch rp.status {
	case statusOK:
		if len(rp.body) < 8 {
			return failedResult(&remoteError{addr: addr, msg: "short response"})
		}
		return result{index: binary.BigEndian.Uint64(rp.body), resp: rp.body[8:], outcome: outcomeOK}
	case statusNotLeader:
		nle, err := decodeNotLeader(rp.body)
		if err != nil {
			return retryResult(&remoteError{addr: addr, msg: err.Error()})
		}
		return retryResult(nle)
	case statusRetry:
		return retryResult(msg())
	case statusUnknown:
		return unknownResult(msg())
	default:
		return failedResult(msg())
	}
}

// forwardReadIndex asks the leader at addr for a read index.
func (n *Node) forwardReadIndex(ctx context.Context, addr string) result {
	rp, _, err := n.rpc.call(ctx, addr, connReadIndex, nil)
	if err != nil {
		return retryResult(fmt.Errorf("read index from %s: %w", addr, err))
	}
	r := decodeResult(addr, rp)
	r.resp = nil
	return r
}

// FetchStats asks the node at addr (a raft address) for its Stats.
func (n *Node) FetchStats(ctx context.Context, addr string) (Stats, error) {
	if addr == n.advertise {
		return n.Stats(), nil
	}
	rp, _, err := n.rpc.call(ctx, addr, connStats, nil)
	if err != nil {
		return Stats{}, fmt.Errorf("consensus: fetching stats from %s: %w", addr, err)
	}
	if rp.status != statusOK {
		return Stats{}, &remoteError{addr: addr, msg: string(rp.body)}
	}
	var st Stats
	if err := json.Unmarshal(rp.body, &st); err != nil {
		return Stats{}, fmt.Errorf("consensus: decoding stats from %s: %w", addr, err)
	}
	return st, nil
}
