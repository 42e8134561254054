package streaming

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/apimachinery/pkg/util/httpstream/spdy"
	remotecommandconsts "k8s.io/apimachinery/pkg/util/remotecommand"
)

// remoteCommandProtocols are the SPDY exec/attach protocols, best first.
var remoteCommandProtocols = []string{
	remotecommandconsts.StreamProtocolV4Name,
	remotecommandconsts.StreamProtocolV3Name,
	remotecommandconsts.StreamProtocolV2Name,
	remotecommandconsts.StreamProtocolV1Name,
}

// streamAndReply is a stream the client opened, with a channel closed once
// the server's reply to it is queued.
type streamAndReply struct {
	httpstream.Stream
	replySent <-chan struct{}
}

// spdyHandshake negotiates one of protocols, answering a failure itself.
func spdyHandshake(w http.ResponseWriter, r *http.Request, protocols []string) (string, error) {
	if len(r.Header.Values(httpstream.HeaderProtocolVersion)) == 0 {
		err := fmt.Errorf("unable to upgrade: %s is required", httpstream.HeaderProtocolVersion)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return "", err
	}
	// Handshake answers 403 itself when no protocol matches.
	return httpstream.Handshake(r, w, protocols)
}

// openSPDYSession upgrades r to SPDY/3.1 and waits for the client's streams,
// as the kubelet does.
func openSPDYSession(w http.ResponseWriter, r *http.Request, opts Options) (*session, error) {
	protocol, err := spdyHandshake(w, r, remoteCommandProtocols)
	if err != nil {
		return nil, err
	}
	streamCh := make(chan streamAndReply)
	done := make(chan struct{})
	defer close(done)
	conn := spdy.NewResponseUpgrader().UpgradeResponse(hijackable(w), r,
		func(st httpstream.Stream, replySent <-chan struct{}) error {
			select {
			case streamCh <- streamAndReply{Stream: st, replySent: replySent}:
				return nil
			case <-done:
				return errors.New("unexpected stream after the session started")
			}
		})
	if conn == nil {
		// The upgrader has answered the client.
		return nil, errors.New("unable to upgrade to SPDY")
	}
	conn.SetIdleTimeout(IdleTimeout)

	resizable := protocol == remotecommandconsts.StreamProtocolV4Name || protocol == remotecommandconsts.StreamProtocolV3Name
	s, err := waitForStreams(conn, streamCh, opts, resizable, StreamCreationTimeout)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if s.errStream == nil {
		conn.Close()
		return nil, errors.New("client opened no error stream")
	}
	if protocol == remotecommandconsts.StreamProtocolV4Name {
		s.writeStatus = jsonStatusWriter(s.errStream)
	} else {
		s.writeStatus = textStatusWriter(s.errStream)
	}
	return &s.session, nil
}

// spdySession is a session with its error stream.
type spdySession struct {
	session
	errStream httpstream.Stream
}

// waitForStreams collects the streams the client opens, one of each
// requested type plus the error stream, counting each once its reply is
// sent.
func waitForStreams(conn httpstream.Connection, streams <-chan streamAndReply, opts Options, resizable bool, timeout time.Duration) (*spdySession, error) {
	want := 1 // error
	for _, b := range []bool{opts.Stdin, opts.Stdout, opts.Stderr, opts.TTY && resizable} {
		if b {
			want++
		}
	}
	s := &spdySession{session: session{conn: conn, gone: conn.CloseChan()}}
	replied := make(chan struct{})
	stop := make(chan struct{})
	defer close(stop)
	expired := time.NewTimer(timeout)
	defer expired.Stop()
	for got := 0; got < want; {
		select {
		case st := <-streams:
			switch st.Headers().Get(corev1.StreamType) {
			case corev1.StreamTypeError:
				s.errStream = st.Stream
			case corev1.StreamTypeStdin:
				s.stdin = st.Stream
			case corev1.StreamTypeStdout:
				s.stdout = st.Stream
			case corev1.StreamTypeStderr:
				s.stderr = st.Stream
			case corev1.StreamTypeResize:
				if !resizable {
					st.Reset()
					continue
				}
				s.resize = st.Stream
			default:
				st.Reset()
				continue
			}
			go func() {
				select {
				case <-st.replySent:
					select {
					case replied <- struct{}{}:
					case <-stop:
					}
				case <-stop:
				}
			}()
		case <-replied:
			got++
		case <-conn.CloseChan():
			return nil, errors.New("connection closed while waiting for the client's streams")
		case <-expired.C:
			return nil, errors.New("timed out waiting for client to create streams")
		}
	}
	return s, nil
}
