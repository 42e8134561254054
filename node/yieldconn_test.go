package node

import (
	"bytes"
	"io"
	"net"
	"testing"
)

func TestYieldListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	yl := yieldListener{ln}
	defer yl.Close()
	want := bytes.Repeat([]byte("shoal"), 10000)
	done := make(chan error, 1)
	go func() {
		c, err := yl.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		if _, ok := c.(yieldConn); !ok {
			t.Errorf("Accept returned %T, want yieldConn", c)
		}
		_, err = c.Write(want)
		done <- err
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, want the %d written", len(got), len(want))
	}
	// A closed listener's error reaches the server unchanged.
	yl.Close()
	if _, err := yl.Accept(); err == nil {
		t.Fatal("Accept on a closed listener succeeded")
	}
}
