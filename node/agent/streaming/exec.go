package streaming

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/httpstream/wsstream"
	remotecommandconsts "k8s.io/apimachinery/pkg/util/remotecommand"
)

// Size is a terminal size in character cells, as a client sends it when its
// terminal is resized.
type Size struct {
	Width  uint16
	Height uint16
}

// Streams are the client's end of an exec or attach session. A stream the
// client did not ask for is nil.
type Streams struct {
	// Stdin returns what the client types; io.EOF once the client closes its
	// stdin (the v5 close signal, a SPDY stream close) or goes away. Closing
	// the process's stdin then is what ends `echo hi | kubectl exec -i pod
	// -- cat`. WebSocket protocols before v5 cannot close stdin.
	Stdin io.Reader
	// Stdout and Stderr send to the client; a write fails once it is gone.
	Stdout io.Writer
	Stderr io.Writer
	TTY    bool
	// Resize delivers the client's terminal sizes (kubectl sends the
	// current one first, then each change). It is nil without TTY (and for
	// the protocols without resizing, SPDY v1 and v2) and is closed when the
	// client sends no more. Read it promptly: the client's other streams can
	// wait behind it.
	Resize <-chan Size
}

// ExecFunc runs cmd in the container with the given streams and returns its
// exit code (0–255; a process killed by signal N exits 128+N). ctx is
// cancelled when the client goes away; the process should then be killed.
// A non-nil error means the command could not be run; it reaches the client
// as an internal error.
type ExecFunc func(ctx context.Context, cmd []string, s Streams) (exitCode int, err error)

// AttachFunc connects the streams to the running container's and returns
// when the container exits or ctx (cancelled when the client goes away) is
// done. A non-nil error reaches the client as an internal error.
type AttachFunc func(ctx context.Context, s Streams) error

// ServeExec answers a pods/exec request: it upgrades the connection (see the
// package doc for the protocols), runs exec and sends the client its exit
// code. It returns once the session is over. An error it returns has already
// been reported to the client where the protocol allows; it is returned for
// logging: a failed upgrade, a client that never opened its streams, exec's
// own error, or a status the client was gone to receive.
func ServeExec(w http.ResponseWriter, r *http.Request, cmd []string, opts Options, exec ExecFunc) error {
	return serve(w, r, opts, func(ctx context.Context, s Streams) (int, error) {
		code, err := exec(ctx, cmd, s)
		if err != nil {
			err = fmt.Errorf("error executing command in container: %w", err)
		}
		return code, err
	})
}

// ServeAttach answers a pods/attach request like ServeExec, with attach in
// place of a command.
func ServeAttach(w http.ResponseWriter, r *http.Request, opts Options, attach AttachFunc) error {
	return serve(w, r, opts, func(ctx context.Context, s Streams) (int, error) {
		if err := attach(ctx, s); err != nil {
			return 0, fmt.Errorf("error attaching to container: %w", err)
		}
		return 0, nil
	})
}

// session is an upgraded exec/attach connection with its streams.
type session struct {
	conn   io.Closer
	stdin  io.Reader      // nil if not requested
	stdout io.WriteCloser // nil if not requested
	stderr io.WriteCloser // nil if not requested
	// resize carries JSON Sizes; nil if the protocol has none. On
	// WebSocket it is channel 4, which also ends (io.EOF) when the
	// connection does, and so tells that the client went away.
	resize io.Reader
	// gone, if not nil, is closed when the connection is (SPDY).
	gone        <-chan bool
	writeStatus func(metav1.Status) error
}

func serve(w http.ResponseWriter, r *http.Request, opts Options, run func(context.Context, Streams) (int, error)) error {
	if opts.TTY {
		opts.Stderr = false
	}
	var (
		s   *session
		err error
	)
	if wsstream.IsWebSocketRequest(r) {
		s, err = openWebSocketSession(w, r, opts)
	} else {
		s, err = openSPDYSession(w, r, opts)
	}
	if err != nil {
		return err
	}
	closeConn := sync.OnceFunc(func() { s.conn.Close() })
	defer closeConn()

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	if s.gone != nil {
		go func() {
			select {
			case <-s.gone:
				cancel()
			case <-ctx.Done():
			}
		}()
	}

	streams := Streams{TTY: opts.TTY}
	if s.stdin != nil {
		streams.Stdin = s.stdin
	}
	if s.stdout != nil {
		streams.Stdout = s.stdout
	}
	if s.stderr != nil {
		streams.Stderr = s.stderr
	}
	resizeDone := make(chan struct{})
	if s.resize != nil {
		var sizes chan Size
		if opts.TTY {
			sizes = make(chan Size)
			streams.Resize = sizes
		}
		go func() {
			defer close(resizeDone)
			readResizes(ctx, s.resize, sizes)
			if s.gone == nil {
				cancel() // WebSocket channel 4 ends with the connection.
			}
		}()
	} else {
		close(resizeDone)
	}

	code, runErr := run(ctx, streams)
	status := resultStatus(code, runErr)

	// Half-close what the client reads to EOF (SPDY), then send the status.
	if s.stdout != nil {
		s.stdout.Close()
	}
	if s.stderr != nil {
		s.stderr.Close()
	}
	statusErr := s.writeStatus(status)
	cancel()
	closeConn()
	<-resizeDone
	if statusErr != nil {
		statusErr = fmt.Errorf("sending the exit status: %w", statusErr)
	}
	return errors.Join(runErr, statusErr)
}

// readResizes decodes JSON Sizes from r onto sizes until r ends, then closes
// sizes. A nil sizes discards what r carries.
func readResizes(ctx context.Context, r io.Reader, sizes chan<- Size) {
	if sizes != nil {
		defer close(sizes)
		dec := json.NewDecoder(r)
		for {
			var sz Size
			if err := dec.Decode(&sz); err != nil {
				break
			}
			select {
			case sizes <- sz:
			case <-ctx.Done():
				return
			}
		}
	}
	// Drain (garbage, or no TTY) until the stream ends.
	io.Copy(io.Discard, r) //nolint:errcheck // only the end matters
}

// resultStatus is the Status the kubelet sends for a finished command.
func resultStatus(code int, err error) metav1.Status {
	switch {
	case err != nil:
		return apierrors.NewInternalError(err).ErrStatus
	case code < 0 || code > 255:
		return apierrors.NewInternalError(fmt.Errorf("command terminated with invalid exit code %d", code)).ErrStatus
	case code != 0:
		return metav1.Status{
			Status: metav1.StatusFailure,
			Reason: remotecommandconsts.NonZeroExitCodeReason,
			Details: &metav1.StatusDetails{
				Causes: []metav1.StatusCause{{
					Type:    remotecommandconsts.ExitCodeCauseType,
					Message: strconv.Itoa(code),
				}},
			},
			Message: fmt.Sprintf("command terminated with non-zero exit code: exit status %d", code),
		}
	default:
		return metav1.Status{Status: metav1.StatusSuccess}
	}
}

// jsonStatusWriter writes the Status as JSON (protocol v4 and later).
func jsonStatusWriter(w io.Writer) func(metav1.Status) error {
	return func(st metav1.Status) error {
		b, err := json.Marshal(st)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
}

// textStatusWriter writes the message of a failure and nothing on success
// (protocols v1–v3).
func textStatusWriter(w io.Writer) func(metav1.Status) error {
	return func(st metav1.Status) error {
		if st.Status == metav1.StatusSuccess {
			return nil
		}
		_, err := io.WriteString(w, (&apierrors.StatusError{ErrStatus: st}).Error())
		return err
	}
}

// hijackable returns w, or the first writer w wraps (through Unwrap, as
// http.ResponseController follows) that can be hijacked.
func hijackable(w http.ResponseWriter) http.ResponseWriter {
	for cur := w; ; {
		if _, ok := cur.(http.Hijacker); ok {
			return cur
		}
		u, ok := cur.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return w
		}
		cur = u.Unwrap()
	}
}
