package streaming

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/apimachinery/pkg/util/httpstream/spdy"
	"k8s.io/apimachinery/pkg/util/httpstream/wsstream"
	portforwardconsts "k8s.io/apimachinery/pkg/util/portforward"
)

// DialFunc connects to port in the pod (its network namespace). ctx bounds
// the dial only.
type DialFunc func(ctx context.Context, port int32) (net.Conn, error)

// ServePortForward answers a pods/portforward request: it upgrades the
// connection (SPDY, SPDY tunnelled through a WebSocket, or the WebSocket
// channel protocol) and copies every connection the client forwards to one
// made by dial, until the client hangs up. It returns once the session is
// over, with an error for logging if it could not start (already answered).
//
// ports, from ParsePortForwardRequest, are used by the WebSocket channel
// protocol only, which needs at least one; SPDY clients name the port of each
// forwarded connection themselves (dial should refuse ports it must not
// reach).
func ServePortForward(w http.ResponseWriter, r *http.Request, ports []int32, dial DialFunc) error {
	switch {
	case wsstream.IsWebSocketRequestWithTunnelingProtocol(r):
		return serveTunneledPortForward(w, r, dial)
	case wsstream.IsWebSocketRequest(r):
		return serveWebSocketPortForward(w, r, ports, dial)
	default:
		return serveSPDYPortForward(w, r, dial)
	}
}

func serveSPDYPortForward(w http.ResponseWriter, r *http.Request, dial DialFunc) error {
	if _, err := spdyHandshake(w, r, []string{portforwardconsts.PortForwardV1Name}); err != nil {
		return err
	}
	h := newPortForwardHandler(dial)
	conn := spdy.NewResponseUpgrader().UpgradeResponse(hijackable(w), r, h.newStream)
	if conn == nil {
		close(h.done)
		return errors.New("unable to upgrade to SPDY")
	}
	h.run(r.Context(), conn)
	return nil
}

// portForwardHandler pairs the data and error streams a SPDY client opens for
// each forwarded connection (as the kubelet does) and forwards each pair.
type portForwardHandler struct {
	dial    DialFunc
	streams chan streamAndReply
	expired chan *streamPair
	done    chan struct{} // closed when run returns
	wg      sync.WaitGroup
	// pairs holds the incomplete pairs by request ID; only run uses it.
	pairs map[string]*streamPair
}

type streamPair struct {
	id    string
	data  *streamAndReply
	errs  *streamAndReply
	timer *time.Timer
}

func newPortForwardHandler(dial DialFunc) *portForwardHandler {
	return &portForwardHandler{
		dial:    dial,
		streams: make(chan streamAndReply),
		expired: make(chan *streamPair),
		done:    make(chan struct{}),
		pairs:   make(map[string]*streamPair),
	}
}

// newStream is the connection's httpstream.NewStreamHandler: it checks the
// headers (an error refuses the stream) and hands the stream to run.
func (h *portForwardHandler) newStream(st httpstream.Stream, replySent <-chan struct{}) error {
	port := st.Headers().Get(corev1.PortHeader)
	if port == "" {
		return fmt.Errorf("%q header is required", corev1.PortHeader)
	}
	if _, err := parsePort(port); err != nil {
		return err
	}
	switch t := st.Headers().Get(corev1.StreamType); t {
	case corev1.StreamTypeData, corev1.StreamTypeError:
	case "":
		return fmt.Errorf("%q header is required", corev1.StreamType)
	default:
		return fmt.Errorf("invalid stream type %q", t)
	}
	select {
	case h.streams <- streamAndReply{Stream: st, replySent: replySent}:
		return nil
	case <-h.done:
		return errors.New("port forwarding session is over")
	}
}

// run serves conn until it closes, then waits for the forwarded connections
// to end.
func (h *portForwardHandler) run(ctx context.Context, conn httpstream.Connection) {
	conn.SetIdleTimeout(IdleTimeout)
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		close(h.done)
		cancel()
		conn.Close()
		for _, p := range h.pairs {
			p.timer.Stop()
		}
		h.wg.Wait()
	}()
	for {
		select {
		case <-conn.CloseChan():
			return
		case <-ctx.Done():
			return
		case st := <-h.streams:
			h.add(ctx, conn, st)
		case p := <-h.expired:
			if h.pairs[p.id] != p {
				continue // completed meanwhile
			}
			delete(h.pairs, p.id)
			p.fail(fmt.Sprintf("timed out waiting for the streams of request %s", p.id))
		}
	}
}

func (h *portForwardHandler) add(ctx context.Context, conn httpstream.Connection, st streamAndReply) {
	id := requestID(st.Stream)
	p := h.pairs[id]
	if p == nil {
		p = &streamPair{id: id}
		p.timer = time.AfterFunc(StreamCreationTimeout, func() {
			select {
			case h.expired <- p:
			case <-h.done:
			}
		})
		h.pairs[id] = p
	}
	slot := &p.data
	if st.Headers().Get(corev1.StreamType) == corev1.StreamTypeError {
		slot = &p.errs
	}
	if *slot != nil {
		st.Reset()
		return
	}
	*slot = &st
	if p.data == nil || p.errs == nil {
		return
	}
	p.timer.Stop()
	delete(h.pairs, id)
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		defer conn.RemoveStreams(p.data.Stream, p.errs.Stream)
		h.forward(ctx, p)
	}()
}

// requestID names the pair st belongs to; clients older than the
// requestID header open the error stream and then the data stream.
func requestID(st httpstream.Stream) string {
	if id := st.Headers().Get(corev1.PortForwardRequestIDHeader); id != "" {
		return id
	}
	if st.Headers().Get(corev1.StreamType) == corev1.StreamTypeData {
		return strconv.FormatUint(uint64(st.Identifier())-2, 10)
	}
	return strconv.FormatUint(uint64(st.Identifier()), 10)
}

func (h *portForwardHandler) forward(ctx context.Context, p *streamPair) {
	defer p.errs.Close()
	// Send nothing before the client has its replies.
	for _, ch := range []<-chan struct{}{p.data.replySent, p.errs.replySent} {
		select {
		case <-ch:
		case <-ctx.Done():
			p.data.Reset()
			return
		}
	}
	port, _ := parsePort(p.data.Headers().Get(corev1.PortHeader)) // checked by newStream
	clientDone, err := pipe(ctx, h.dial, port, p.data, true)
	if err != nil {
		p.fail(fmt.Sprintf("error forwarding port %d to pod: %v", port, err))
	} else {
		p.data.Close() // EOF for the client, which then resets the stream
	}
	select {
	case <-clientDone:
	case <-ctx.Done():
		p.data.Reset()
		<-clientDone
	}
}

// fail reports msg on the error stream and resets the pair.
func (p *streamPair) fail(msg string) {
	if p.errs != nil {
		io.WriteString(p.errs, msg) //nolint:errcheck // best effort, resetting next
		p.errs.Reset()
	}
	if p.data != nil {
		p.data.Reset()
	}
}

// pipe copies between stream and a connection to port until the target has
// sent everything, the copy from the client fails, or ctx is done. If
// halfClose, the end of the client's data is passed on (CloseWrite) and the
// target's answer still awaited; otherwise it ends the forwarding. The copy
// from the client can outlast pipe, blocked reading stream: clientDone is
// closed when it is over, and the caller ends it by ending stream.
func pipe(ctx context.Context, dial DialFunc, port int32, stream io.ReadWriter, halfClose bool) (clientDone <-chan struct{}, err error) {
	done := make(chan struct{})
	target, err := dial(ctx, port)
	if err != nil {
		close(done)
		return done, err
	}
	stop := context.AfterFunc(ctx, func() { target.Close() })
	defer stop()

	toTarget := make(chan error, 1)
	go func() {
		defer close(done)
		_, err := io.Copy(target, stream)
		if err == nil && halfClose {
			if cw, ok := target.(interface{ CloseWrite() error }); ok {
				err = cw.CloseWrite()
			}
		}
		toTarget <- err
	}()
	fromTarget := make(chan error, 1)
	go func() {
		_, err := io.Copy(stream, target)
		fromTarget <- err
	}()

	fromDone := false
	select {
	case err = <-fromTarget:
		fromDone = true
	case err = <-toTarget:
		if err == nil && halfClose {
			err = <-fromTarget
			fromDone = true
		}
	}
	target.Close()
	if !fromDone {
		<-fromTarget
	}
	if ctx.Err() != nil {
		err = nil // the client is gone: nobody to tell
	}
	return done, err
}

// serveWebSocketPortForward serves the kubelet's WebSocket channel protocol:
// channels 2i (data) and 2i+1 (error) for ports[i], each opened with the port
// as two little-endian bytes.
func serveWebSocketPortForward(w http.ResponseWriter, r *http.Request, ports []int32, dial DialFunc) error {
	if len(ports) == 0 {
		err := errors.New(`query parameter "ports" is required`)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return err
	}
	channels := make([]wsstream.ChannelType, 0, 2*len(ports))
	for range ports {
		channels = append(channels, wsstream.ReadWriteChannel, wsstream.WriteChannel)
	}
	conn := wsstream.NewConn(map[string]wsstream.ChannelProtocolConfig{
		"":                        {Binary: true, Channels: channels},
		v4BinaryWebsocketProtocol: {Binary: true, Channels: channels},
		v4Base64WebsocketProtocol: {Binary: false, Channels: channels},
	})
	conn.SetIdleTimeout(IdleTimeout)
	_, streams, err := conn.Open(hijackable(w), r)
	if err != nil {
		return fmt.Errorf("upgrading to websocket: %w", err)
	}

	ctx, cancel := context.WithCancel(r.Context())
	var (
		wg         sync.WaitGroup
		mu         sync.Mutex
		clientDone []<-chan struct{} // guarded by mu
	)
	defer func() {
		cancel()
		wg.Wait()
		conn.Close() // ends the reads of the channels
		for _, ch := range clientDone {
			<-ch
		}
	}()
	for i, port := range ports {
		data, errs := streams[2*i], streams[2*i+1]
		var prefix [2]byte
		binary.LittleEndian.PutUint16(prefix[:], uint16(port))
		if _, err := data.Write(prefix[:]); err != nil {
			return err
		}
		if _, err := errs.Write(prefix[:]); err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			// A data channel ends only with the connection: no half-close.
			done, err := pipe(ctx, dial, port, data, false)
			if err != nil {
				fmt.Fprintf(errs, "error forwarding port %d to pod: %v", port, err)
			}
			mu.Lock()
			clientDone = append(clientDone, done)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return nil
}
