package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countConn counts the writes that reach the underlying connection.
type countConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

func TestCoalesceConn(t *testing.T) {
	client, server := net.Pipe()
	cc := &countConn{Conn: client}
	conn := newCoalesceConn(cc)

	const writers, perWriter = 8, 200
	var got bytes.Buffer
	readDone := make(chan error, 1)
	go func() {
		_, err := io.CopyN(&got, server, int64(writers*perWriter*len("w0-0000;")))
		readDone <- err
	}()

	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				msg := fmt.Sprintf("w%d-%04d;", w, i)
				if n, err := conn.Write([]byte(msg)); err != nil || n != len(msg) {
					t.Errorf("Write = %d, %v", n, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-readDone:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("queued writes never reached the connection")
	}

	// Every message arrives whole, and each writer's in the order written.
	next := make([]int, writers)
	for _, m := range bytes.Split(bytes.TrimSuffix(got.Bytes(), []byte(";")), []byte(";")) {
		var w, i int
		if _, err := fmt.Sscanf(string(m), "w%d-%04d", &w, &i); err != nil || w >= writers {
			t.Fatalf("torn message %q", m)
		}
		if i != next[w] {
			t.Fatalf("writer %d: message %d arrived, want %d", w, i, next[w])
		}
		next[w]++
	}
	if n := cc.writes.Load(); n >= writers*perWriter {
		t.Errorf("%d writes reached the connection for %d queued: nothing coalesced", n, writers*perWriter)
	}

	// A failed write fails the next Write and closes the connection.
	server.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := conn.Write([]byte("x")); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("writes kept succeeding after the peer closed")
		}
		time.Sleep(time.Millisecond)
	}
	conn.Close()
}
