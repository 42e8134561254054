package consensus

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestMuxGoAway checks the contract that lets a follower retry safely: after
// a GOAWAY, requests above its last id are reported as never sent, the
// others still get their responses, and the connection takes no new calls.
func TestMuxGoAway(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	m := newMuxConn(client)
	done := make(chan struct{})
	go func() { defer close(done); m.readLoop() }()
	ctx := ctxTimeout(t, 10*time.Second)

	type outcome struct {
		r    reply
		sent bool
		err  error
	}
	var wg sync.WaitGroup
	results := make([]outcome, 2)
	br := bufio.NewReader(server)
	ids := make([]uint64, 2)
	for i := range 2 {
		// One at a time, so that request i gets id i+1.
		wg.Go(func() {
			r, sent, err := m.call(ctx, []byte{0, 0, 0, 0, byte('a' + i)})
			results[i] = outcome{r, sent, err}
		})
		id, _, err := readFrame(br)
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = id
	}
	write := func(id uint64, payload []byte) {
		if _, err := server.Write(appendFrame(nil, id, payload)); err != nil {
			t.Fatal(err)
		}
	}
	// Only the first request was admitted before the server went away.
	write(0, encodeGoAway(ids[0]))
	write(ids[0], []byte{statusOK, 1})
	wg.Wait()

	a, b := results[0], results[1]
	if a.err != nil || !a.sent || a.r.status != statusOK {
		t.Fatalf("admitted request: %+v", a)
	}
	if b.sent || !errors.Is(b.err, errGoAway) {
		t.Fatalf("request above the GOAWAY id: sent=%v err=%v; want not sent", b.sent, b.err)
	}
	if _, sent, err := m.call(ctx, []byte{0, 0, 0, 0}); sent || err == nil {
		t.Fatalf("call after GOAWAY: sent=%v err=%v", sent, err)
	}
	if m.usable() {
		t.Fatal("connection still usable after GOAWAY")
	}
	server.Close()
	<-done
}

// TestMuxConnectionLoss: a request in flight when the connection breaks has
// an unknown outcome (sent=true).
func TestMuxConnectionLoss(t *testing.T) {
	client, server := net.Pipe()
	m := newMuxConn(client)
	done := make(chan struct{})
	go func() { defer close(done); m.readLoop() }()
	go func() {
		_, _, _ = readFrame(bufio.NewReader(server))
		server.Close()
	}()
	_, sent, err := m.call(context.Background(), []byte{0, 0, 0, 0, 'x'})
	if !sent || err == nil {
		t.Fatalf("sent=%v err=%v; want sent with an error", sent, err)
	}
	<-done
}

func TestTransitEstimateIgnoresSkew(t *testing.T) {
	sc := &serverConn{}
	now := time.Now().UnixMilli()
	// The peer's clock runs 10 minutes behind: its first request sets the
	// baseline, so skew alone never counts as transit.
	skew := int64(10 * 60 * 1000)
	if d := sc.transit(now - skew); d != 0 {
		t.Fatalf("first request transit %v", d)
	}
	if d := sc.transit(now - skew + 5); d != 0 {
		t.Fatalf("a faster request lowers the baseline, transit %v", d)
	}
	// A request sent 3 s before the baseline says it should have arrived.
	if d := sc.transit(now - skew - 3000); d < 2900*time.Millisecond || d > 3100*time.Millisecond {
		t.Fatalf("delayed request transit %v, want about 3s", d)
	}
}

func TestExpiredRequestRefused(t *testing.T) {
	n := &Node{}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req := encodeRequest(ctx, []byte("cmd"))
	resp := n.handleRequest(context.Background(), connForward, req, 2*time.Second)
	if resp[0] != statusFailed || !strings.Contains(string(resp[1:]), "expired in transit") {
		t.Fatalf("expired forward answered %q", resp)
	}
}
