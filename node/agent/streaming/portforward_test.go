package streaming

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
)

// Ports the fake pod answers on.
const (
	portEcho   = 7000 // echoes as it reads
	portUpper  = 7001 // reads to EOF, answers upper-cased, closes
	portBanner = 7002 // speaks first: writes a banner, closes
	portClosed = 9999 // refuses
)

// startTargets starts the pod's servers on 127.0.0.1 and returns a DialFunc
// reaching them by pod port.
func startTargets(t *testing.T) DialFunc {
	t.Helper()
	addrs := map[int32]string{}
	var (
		wg        sync.WaitGroup
		listeners []net.Listener
	)
	t.Cleanup(func() {
		for _, ln := range listeners {
			ln.Close()
		}
		wg.Wait()
	})
	serve := func(port int32, handle func(net.Conn)) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		listeners = append(listeners, ln)
		addrs[port] = ln.Addr().String()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer c.Close()
					handle(c)
				}()
			}
		}()
	}
	serve(portEcho, func(c net.Conn) { io.Copy(c, c) })
	serve(portUpper, func(c net.Conn) {
		b, _ := io.ReadAll(c)
		c.Write(bytes.ToUpper(b))
	})
	serve(portBanner, func(c net.Conn) { io.WriteString(c, "220 ready\n") })
	return func(ctx context.Context, port int32) (net.Conn, error) {
		addr, ok := addrs[port]
		if !ok {
			return nil, fmt.Errorf("dial tcp :%d: connection refused", port)
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
}

type dialerFunc func(t *testing.T, ts *testServer) httpstream.Dialer

func spdyDialer(t *testing.T, ts *testServer) httpstream.Dialer {
	tr, up, err := spdy.RoundTripperFor(ts.restConfig())
	if err != nil {
		t.Fatal(err)
	}
	return spdy.NewDialer(up, &http.Client{Transport: tr}, "POST", ts.url("/portforward", nil))
}

func tunnelDialer(t *testing.T, ts *testServer) httpstream.Dialer {
	d, err := portforward.NewSPDYOverWebsocketDialer(ts.url("/portforward", nil), ts.restConfig())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// kubectlDialer is kubectl ≥ 1.31's: the tunnel, falling back to SPDY.
func kubectlDialer(t *testing.T, ts *testServer) httpstream.Dialer {
	return portforward.NewFallbackDialer(tunnelDialer(t, ts), spdyDialer(t, ts), shouldFallback)
}

var dialers = map[string]dialerFunc{
	"spdy":             spdyDialer,
	"websocket-tunnel": tunnelDialer,
	"fallback":         kubectlDialer,
}

// forward runs client-go's port forwarder for the pod ports and returns the
// local ports.
func forward(t *testing.T, d httpstream.Dialer, ports ...int) []uint16 {
	t.Helper()
	specs := make([]string, len(ports))
	for i, p := range ports {
		specs[i] = fmt.Sprintf("0:%d", p)
	}
	stop, ready := make(chan struct{}), make(chan struct{})
	pf, err := portforward.NewOnAddresses(d, []string{"127.0.0.1"}, specs, stop, ready, io.Discard, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- pf.ForwardPorts() }()
	t.Cleanup(func() {
		close(stop)
		if err := <-errc; err != nil {
			t.Errorf("ForwardPorts: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-errc:
		t.Fatalf("ForwardPorts: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("port forwarding not ready")
	}
	fp, err := pf.GetPorts()
	if err != nil {
		t.Fatal(err)
	}
	local := make([]uint16, len(fp))
	for i, p := range fp {
		local[i] = p.Local
	}
	return local
}

func dialLocal(t *testing.T, port uint16) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

func TestPortForward(t *testing.T) {
	for _, tls := range []bool{false, true} {
		for name, newDialer := range dialers {
			t.Run(fmt.Sprintf("%s/tls=%v", name, tls), func(t *testing.T) {
				t.Parallel()
				ts := newTestServer(t, tls, startTargets(t))
				local := forward(t, newDialer(t, ts), portEcho, portUpper, portBanner)

				t.Run("interactive", func(t *testing.T) {
					c := dialLocal(t, local[0])
					r := bufio.NewReader(c)
					for _, line := range []string{"one\n", "two\n"} {
						io.WriteString(c, line)
						got, err := r.ReadString('\n')
						if err != nil || got != line {
							t.Fatalf("echo %q: got %q, %v", line, got, err)
						}
					}
				})

				t.Run("half-close reaches the target", func(t *testing.T) {
					for i := range 3 { // several connections in one session
						c := dialLocal(t, local[1])
						msg := fmt.Sprintf("request %d", i)
						io.WriteString(c, msg)
						c.CloseWrite()
						got, err := io.ReadAll(c)
						if err != nil || string(got) != strings.ToUpper(msg) {
							t.Fatalf("got %q, %v; want %q", got, err, strings.ToUpper(msg))
						}
					}
				})

				t.Run("target speaks first and closes", func(t *testing.T) {
					c := dialLocal(t, local[2])
					got, err := io.ReadAll(c)
					if err != nil || string(got) != "220 ready\n" {
						t.Fatalf("got %q, %v; want the banner", got, err)
					}
				})
			})
		}
	}
}

// TestPortForwardDialError reads the error stream of a connection to a port
// that refuses, with client-go's SPDY connection (plain and tunnelled).
func TestPortForwardDialError(t *testing.T) {
	for name, newDialer := range map[string]dialerFunc{"spdy": spdyDialer, "websocket-tunnel": tunnelDialer} {
		t.Run(name, func(t *testing.T) {
			ts := newTestServer(t, false, startTargets(t))
			conn, proto, err := newDialer(t, ts).Dial(portforward.PortForwardProtocolV1Name)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if proto != portforward.PortForwardProtocolV1Name {
				t.Errorf("negotiated %q", proto)
			}
			h := http.Header{}
			h.Set(corev1.PortHeader, fmt.Sprint(portClosed))
			h.Set(corev1.PortForwardRequestIDHeader, "0")
			h.Set(corev1.StreamType, corev1.StreamTypeError)
			errStream, err := conn.CreateStream(h)
			if err != nil {
				t.Fatal(err)
			}
			errStream.Close()
			h.Set(corev1.StreamType, corev1.StreamTypeData)
			if _, err := conn.CreateStream(h); err != nil {
				t.Fatal(err)
			}
			msg, _ := io.ReadAll(errStream)
			if !strings.Contains(string(msg), "error forwarding port 9999") || !strings.Contains(string(msg), "connection refused") {
				t.Errorf("error stream: %q", msg)
			}
		})
	}
}

// TestPortForwardTunnelFallback: a tunnelling protocol the server does not
// know is an upgrade failure to client-go, which kubectl answers with SPDY.
func TestPortForwardTunnelFallback(t *testing.T) {
	ts := newTestServer(t, false, startTargets(t))
	_, _, err := tunnelDialer(t, ts).Dial("portforward.v9.k8s.io")
	if !shouldFallback(err) {
		t.Fatalf("err = %v; want an upgrade failure", err)
	}
}

// TestPortForwardWebSocketChannels speaks the kubelet's WebSocket channel
// protocol by hand: data and error channels per port, each opened with the
// port in two little-endian bytes.
func TestPortForwardWebSocketChannels(t *testing.T) {
	ts := newTestServer(t, false, startTargets(t))
	u := ts.url("/portforward", nil)
	u.Scheme = "ws"
	u.RawQuery = fmt.Sprintf("ports=%d,%d", portEcho, portClosed)
	ws, resp, err := (&websocket.Dialer{Subprotocols: []string{"v4.channel.k8s.io"}}).Dial(u.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	defer ws.Close()
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))

	read := func() (byte, []byte) {
		t.Helper()
		typ, msg, err := ws.ReadMessage()
		if err != nil || typ != websocket.BinaryMessage || len(msg) == 0 {
			t.Fatalf("read: %d %q %v", typ, msg, err)
		}
		return msg[0], msg[1:]
	}
	got := map[byte][]byte{}
	var errMsg string
	for len(got) < 4 || errMsg == "" {
		ch, data := read()
		if _, seen := got[ch]; seen && ch == 3 {
			errMsg += string(data)
			continue
		}
		got[ch] = data
	}
	for ch, port := range map[byte]uint16{0: portEcho, 1: portEcho, 2: portClosed, 3: portClosed} {
		if len(got[ch]) != 2 || binary.LittleEndian.Uint16(got[ch]) != port {
			t.Errorf("channel %d opened with %v, want port %d", ch, got[ch], port)
		}
	}
	if !strings.Contains(errMsg, "connection refused") {
		t.Errorf("error channel of the refused port: %q", errMsg)
	}

	if err := ws.WriteMessage(websocket.BinaryMessage, append([]byte{0}, "ping"...)); err != nil {
		t.Fatal(err)
	}
	var echoed []byte
	for len(echoed) < 4 {
		ch, data := read()
		if ch != 0 {
			t.Fatalf("unexpected message on channel %d: %q", ch, data)
		}
		echoed = append(echoed, data...)
	}
	if string(echoed) != "ping" {
		t.Errorf("echo %q, want ping", echoed)
	}
}
