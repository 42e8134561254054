package streaming

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"k8s.io/apimachinery/pkg/util/httpstream/spdy"
	portforwardconsts "k8s.io/apimachinery/pkg/util/portforward"
)

// serveTunneledPortForward serves SPDY port forwarding tunnelled through a
// WebSocket (subprotocol SPDY/3.1+portforward.k8s.io, kubectl ≥ 1.31): each
// binary message carries SPDY bytes, and SPDY starts right after the
// WebSocket upgrade. This is what the apiserver's TunnelingHandler and the
// kubelet do together.
func serveTunneledPortForward(w http.ResponseWriter, r *http.Request, dial DialFunc) error {
	const protocol = portforwardconsts.WebsocketsSPDYTunnelingPortForwardV1
	if offered := websocket.Subprotocols(r); !slices.Contains(offered, protocol) {
		// Not upgrading: client-go sees an upgrade failure and falls back
		// to plain SPDY.
		err := fmt.Errorf("unable to upgrade: tunneling protocols %q are not supported, only %q", offered, protocol)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return err
	}
	upgrader := websocket.Upgrader{
		Subprotocols: []string{protocol},
		// Like the apiserver: clients are authenticated, not browsers.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	ws, err := upgrader.Upgrade(hijackable(w), r, nil)
	if err != nil {
		return fmt.Errorf("upgrading to websocket: %w", err) // answered by Upgrade
	}
	h := newPortForwardHandler(dial)
	conn, err := spdy.NewServerConnection(&tunnelConn{ws: ws}, h.newStream)
	if err != nil {
		ws.Close()
		close(h.done)
		return fmt.Errorf("starting SPDY in the websocket tunnel: %w", err)
	}
	h.run(r.Context(), conn)
	return nil
}

// tunnelConn is a net.Conn over a WebSocket: one binary message per Write,
// messages read back to back. As client-go's TunnelingConnection, its peer.
type tunnelConn struct {
	ws *websocket.Conn
	// msg is the message being read; only Read (one reader) uses it.
	msg io.Reader
	// wmu serializes writers: a WebSocket takes one at a time.
	wmu       sync.Mutex
	closeOnce sync.Once
}

var _ net.Conn = (*tunnelConn)(nil)

func (c *tunnelConn) Read(p []byte) (int, error) {
	for {
		if c.msg == nil {
			typ, r, err := c.ws.NextReader()
			if err != nil {
				if websocket.IsCloseError(err, websocket.CloseNormalClosure) {
					return 0, io.EOF
				}
				return 0, err
			}
			if typ != websocket.BinaryMessage {
				return 0, errors.New("websocket tunnel: unexpected message type")
			}
			c.msg = r
		}
		n, err := c.msg.Read(p)
		if err == io.EOF {
			c.msg = nil
			if n == 0 {
				continue
			}
			err = nil
		}
		return n, err
	}
}

func (c *tunnelConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *tunnelConn) Close() error {
	err := net.ErrClosed
	c.closeOnce.Do(func() {
		msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
		werr := c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
		err = c.ws.Close()
		if err == nil && !errors.Is(werr, websocket.ErrCloseSent) {
			err = werr
		}
	})
	return err
}

func (c *tunnelConn) LocalAddr() net.Addr  { return c.ws.LocalAddr() }
func (c *tunnelConn) RemoteAddr() net.Addr { return c.ws.RemoteAddr() }

func (c *tunnelConn) SetDeadline(t time.Time) error {
	return errors.Join(c.ws.SetReadDeadline(t), c.ws.SetWriteDeadline(t))
}
func (c *tunnelConn) SetReadDeadline(t time.Time) error  { return c.ws.SetReadDeadline(t) }
func (c *tunnelConn) SetWriteDeadline(t time.Time) error { return c.ws.SetWriteDeadline(t) }
