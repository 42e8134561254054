package consensus

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"
)

// gatedConn holds every Write until release gets a value and records what
// was written; after failAfter bytes in total it accepts no more.
type gatedConn struct {
	net.Conn
	release   chan struct{}
	failAfter int // 0: never fail

	mu     sync.Mutex
	writes int
	buf    bytes.Buffer
}

func (c *gatedConn) Write(p []byte) (int, error) {
	<-c.release
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes++
	if c.failAfter > 0 && c.buf.Len()+len(p) > c.failAfter {
		n := c.failAfter - c.buf.Len()
		c.buf.Write(p[:n])
		return n, errors.New("connection reset")
	}
	c.buf.Write(p)
	return len(p), nil
}

func (c *gatedConn) SetWriteDeadline(time.Time) error { return nil }

// queuedFrames waits until n frames are queued or written.
func queuedFrames(t *testing.T, w *frameWriter, frameLen, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		w.mu.Lock()
		q := w.queued
		w.mu.Unlock()
		if q == uint64(frameLen*n) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d frames queued", q/uint64(frameLen), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestFrameWriterCombines: frames queued while a write is in flight go out
// together in the next write, each intact and whole.
func TestFrameWriterCombines(t *testing.T) {
	c := &gatedConn{release: make(chan struct{})}
	w := newFrameWriter(c)
	const n = 50
	payload := func(i int) []byte { return fmt.Appendf(nil, "frame-%03d", i) }
	frameLen := frameHeaderLen + len(payload(0))
	var wg sync.WaitGroup
	errs := make([]error, n)
	wg.Go(func() { errs[0] = w.write(1, payload(0), time.Second) })
	queuedFrames(t, w, frameLen, 1) // the first writer is now blocked in Write
	for i := 1; i < n; i++ {
		wg.Go(func() { errs[i] = w.write(uint64(i+1), payload(i), time.Second) })
	}
	queuedFrames(t, w, frameLen, n)
	close(c.release)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
	}
	if c.writes != 2 {
		t.Fatalf("%d frames took %d writes, want 2 (one alone, then the %d that queued behind it)", n, c.writes, n-1)
	}
	seen := make(map[uint64]bool)
	br := bufio.NewReader(&c.buf)
	for range n {
		id, p, err := readFrame(br)
		if err != nil {
			t.Fatal(err)
		}
		if want := payload(int(id - 1)); !bytes.Equal(p, want) || seen[id] {
			t.Fatalf("frame %d carries %q (want %q, seen before %v)", id, p, want, seen[id])
		}
		seen[id] = true
	}
	if br.Buffered() != 0 || c.buf.Len() != 0 {
		t.Fatal("bytes left after the frames")
	}
}

// TestFrameWriterFailure: when a combined write breaks off, the frames it
// completed succeed and every frame cut short or still queued reports the
// error; nothing is written after it.
func TestFrameWriterFailure(t *testing.T) {
	payload := []byte("0123456789")
	frameLen := frameHeaderLen + len(payload)
	// Frame 1 goes alone; frames 2–4 share the second write, which breaks
	// in the middle of the third frame it carries.
	c := &gatedConn{release: make(chan struct{}), failAfter: 3*frameLen + frameLen/2}
	w := newFrameWriter(c)
	errs := make([]error, 5)
	var wg sync.WaitGroup
	wg.Go(func() { errs[1] = w.write(1, payload, time.Second) })
	queuedFrames(t, w, frameLen, 1)
	for id := 2; id <= 4; id++ {
		wg.Go(func() { errs[id] = w.write(uint64(id), payload, time.Second) })
		queuedFrames(t, w, frameLen, id)
	}
	close(c.release)
	wg.Wait()
	for id, want := range []bool{1: true, 2: true, 3: true, 4: false} {
		if id == 0 {
			continue
		}
		if ok := errs[id] == nil; ok != want {
			t.Fatalf("frame %d: err %v, want success %v", id, errs[id], want)
		}
	}
	if err := w.write(5, payload, time.Second); err == nil {
		t.Fatal("write after a failed write succeeded")
	}
	if c.writes != 2 {
		t.Fatalf("%d writes, want 2", c.writes)
	}
}
