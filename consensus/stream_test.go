package consensus

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// expectClosed asserts that the server closes conn (or fails it) promptly.
func expectClosed(t *testing.T, conn net.Conn, within time.Duration) {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(within))
	buf := make([]byte, 64)
	for {
		_, err := conn.Read(buf)
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("connection still open after %v", within)
		}
		return
	}
}

func TestStreamRefusesUnauthenticatedPeers(t *testing.T) {
	n := startNode(t, "solo", t.TempDir(), "", true, func(c *Config) {
		c.HandshakeTimeout = 500 * time.Millisecond
	})
	waitLeader(t, n)
	s := n.stream
	waitRejected := func(want uint64) {
		t.Helper()
		waitFor(t, 5*time.Second, "connection to be refused", func() bool { return s.rejected.Load() >= want })
	}

	t.Run("plaintext", func(t *testing.T) {
		before := s.rejected.Load()
		conn, err := net.Dial("tcp", n.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// Something that would look like a raft RPC to a careless server.
		if _, err := conn.Write([]byte("R\x00\x81\xa4Term\x01")); err != nil {
			t.Fatal(err)
		}
		expectClosed(t, conn, 5*time.Second)
		waitRejected(before + 1)
	})

	t.Run("silent client", func(t *testing.T) {
		before := s.rejected.Load()
		conn, err := net.Dial("tcp", n.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		start := time.Now()
		expectClosed(t, conn, 5*time.Second)
		if d := time.Since(start); d < 400*time.Millisecond {
			t.Fatalf("closed after %v, before the handshake timeout", d)
		}
		waitRejected(before + 1)
	})

	t.Run("foreign CA client", func(t *testing.T) {
		before := s.rejected.Load()
		rogue := newTestCA(t, "rogue CA")
		cfg := &tls.Config{
			Certificates: []tls.Certificate{rogue.issue(t, "rogue")},
			RootCAs:      sharedCA().pool, // trusts the server; the server must not trust us
			MinVersion:   tls.VersionTLS13,
		}
		conn, err := tls.Dial("tcp", n.Addr(), cfg)
		if err == nil {
			defer conn.Close()
			// With TLS 1.3 the client may finish before the server rejects
			// its certificate; then the first read fails.
			_, _ = conn.Write(append([]byte{connStats}, appendFrame(nil, 1, []byte{0, 0, 0, 0})...))
			expectClosed(t, conn, 5*time.Second)
		}
		waitRejected(before + 1)
	})

	t.Run("no client certificate", func(t *testing.T) {
		before := s.rejected.Load()
		conn, err := tls.Dial("tcp", n.Addr(), &tls.Config{RootCAs: sharedCA().pool, MinVersion: tls.VersionTLS13})
		if err == nil {
			defer conn.Close()
			_, _ = conn.Write([]byte{connRaft})
			expectClosed(t, conn, 5*time.Second)
		}
		waitRejected(before + 1)
	})

	if got := s.acceptedRaft.Load(); got != 0 {
		t.Fatalf("%d connections reached raft", got)
	}
	mustPropose(t, n, "still-serving")
}

func TestDialRefusesForeignServer(t *testing.T) {
	n := startNode(t, "solo", t.TempDir(), "", true)
	rogue := newTestCA(t, "rogue CA")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{rogue.issue(t, "rogue")},
		ClientAuth:   tls.RequestClientCert,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	_, err = n.FetchStats(ctxTimeout(t, 5*time.Second), ln.Addr().String())
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("FetchStats against a foreign-CA server: %v", err)
	}
	if _, err := n.stream.Dial("127.0.0.1:1", time.Second); err == nil {
		t.Fatal("dialing a closed port succeeded")
	}
}
