package streaming

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	remotecommandconsts "k8s.io/apimachinery/pkg/util/remotecommand"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	utilexec "k8s.io/client-go/util/exec"
)

// fakeExec runs a few made-up commands:
//
//	upper [code]   stdin → stdout upper-cased until stdin's EOF, "bye" on stderr, exits code
//	echo words...  prints the words, exits 0
//	exit code      exits code
//	fail           cannot run
//	resize n       prints the first n terminal sizes as WxH lines
//	wait           blocks until ctx is done, then reports on test.cancelled
func (ts *testServer) fakeExec(ctx context.Context, cmd []string, s Streams) (int, error) {
	// A real runtime takes milliseconds to start a process. client-go's
	// WebSocket executor starts reading before it has created its streams:
	// it drops what arrives in between and fails if the connection ends
	// then, so a command that answered within microseconds could race it.
	time.Sleep(20 * time.Millisecond)
	code := func(i int) int {
		if len(cmd) <= i {
			return 0
		}
		n, err := strconv.Atoi(cmd[i])
		if err != nil {
			return 255
		}
		return n
	}
	switch cmd[0] {
	case "upper":
		if s.Stdin == nil || s.Stdout == nil {
			return 0, errors.New("upper needs stdin and stdout")
		}
		b, err := io.ReadAll(s.Stdin)
		if err != nil {
			return 0, err
		}
		if _, err := s.Stdout.Write(bytes.ToUpper(b)); err != nil {
			return 0, err
		}
		if s.Stderr != nil {
			io.WriteString(s.Stderr, "bye\n")
		}
		return code(1), nil
	case "echo":
		_, err := fmt.Fprintln(s.Stdout, strings.Join(cmd[1:], " "))
		return 0, err
	case "exit":
		return code(1), nil
	case "fail":
		return 0, errors.New("no such container")
	case "resize":
		if !s.TTY || s.Resize == nil {
			return 0, errors.New("no terminal")
		}
		for range code(1) {
			sz, ok := <-s.Resize
			if !ok {
				return 0, errors.New("resize channel closed early")
			}
			fmt.Fprintf(s.Stdout, "%dx%d\n", sz.Width, sz.Height)
		}
		return 0, nil
	case "wait":
		<-ctx.Done()
		ts.cancelled <- struct{}{}
		return 0, nil
	}
	return 127, nil
}

type testServer struct {
	*httptest.Server
	cancelled chan struct{}
	handlers  sync.WaitGroup
}

// newTestServer serves /exec, /attach and /portforward (dialling by dial),
// over TLS if tls. Its cleanup waits for the handlers, which run past the
// server's Close on hijacked connections.
func newTestServer(t *testing.T, tls bool, dial DialFunc) *testServer {
	t.Helper()
	ts := &testServer{cancelled: make(chan struct{}, 10)}
	mux := http.NewServeMux()
	track := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			ts.handlers.Add(1)
			defer ts.handlers.Done()
			h(w, r)
		}
	}
	mux.HandleFunc("/exec", track(func(w http.ResponseWriter, r *http.Request) {
		cmd, opts, err := ParseExecRequest(r)
		if err != nil {
			writeStatus(w, err)
			return
		}
		ServeExec(w, r, cmd, opts, ts.fakeExec) //nolint:errcheck // reported to the client
	}))
	mux.HandleFunc("/attach", track(func(w http.ResponseWriter, r *http.Request) {
		opts, err := ParseAttachRequest(r)
		if err != nil {
			writeStatus(w, err)
			return
		}
		ServeAttach(w, r, opts, func(ctx context.Context, s Streams) error { //nolint:errcheck
			_, err := io.Copy(s.Stdout, s.Stdin)
			return err
		})
	}))
	mux.HandleFunc("/portforward", track(func(w http.ResponseWriter, r *http.Request) {
		ports, err := ParsePortForwardRequest(r)
		if err != nil {
			writeStatus(w, err)
			return
		}
		ServePortForward(w, r, ports, dial) //nolint:errcheck
	}))
	if tls {
		ts.Server = httptest.NewTLSServer(mux)
	} else {
		ts.Server = httptest.NewServer(mux)
	}
	t.Cleanup(func() {
		ts.Close()
		done := make(chan struct{})
		go func() { ts.handlers.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("handlers still running 10s after the test")
		}
	})
	return ts
}

func writeStatus(w http.ResponseWriter, err error) {
	var se *apierrors.StatusError
	if !errors.As(err, &se) {
		se = apierrors.NewInternalError(err)
	}
	st := se.Status()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(int(st.Code))
	json.NewEncoder(w).Encode(st)
}

func (ts *testServer) restConfig() *rest.Config {
	cfg := &rest.Config{Host: ts.URL}
	if ts.TLS != nil {
		cfg.TLSClientConfig.CAData = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw})
	}
	return cfg
}

func (ts *testServer) url(path string, q url.Values) *url.URL {
	u, _ := url.Parse(ts.URL + path)
	u.RawQuery = q.Encode()
	return u
}

// execQuery is the query kubectl sends for exec.
func execQuery(stdin, stdout, stderr, tty bool, cmd ...string) url.Values {
	q := url.Values{"command": cmd, "container": {"c"}}
	for k, v := range map[string]bool{"stdin": stdin, "stdout": stdout, "stderr": stderr, "tty": tty} {
		if v {
			q.Set(k, "true")
		}
	}
	return q
}

// shouldFallback is kubectl's condition for falling back from WebSocket.
func shouldFallback(err error) bool {
	return httpstream.IsUpgradeFailure(err) || httpstream.IsHTTPSProxyError(err)
}

type executorFunc func(t *testing.T, ts *testServer, u *url.URL) remotecommand.Executor

func spdyExecutor(t *testing.T, ts *testServer, u *url.URL) remotecommand.Executor {
	e, err := remotecommand.NewSPDYExecutor(ts.restConfig(), "POST", u)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func websocketExecutor(t *testing.T, ts *testServer, u *url.URL) remotecommand.Executor {
	e, err := remotecommand.NewWebSocketExecutor(ts.restConfig(), "GET", u.String())
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// kubectlExecutor is kubectl ≥ 1.30's: WebSocket v5, falling back to SPDY.
func kubectlExecutor(t *testing.T, ts *testServer, u *url.URL) remotecommand.Executor {
	e, err := remotecommand.NewFallbackExecutor(websocketExecutor(t, ts, u), spdyExecutor(t, ts, u), shouldFallback)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

var executors = map[string]executorFunc{
	"spdy":         spdyExecutor,
	"websocket-v5": websocketExecutor,
	"fallback":     kubectlExecutor,
}

// sizeQueue hands out sizes, then nil once the test is over.
type sizeQueue struct {
	sizes chan remotecommand.TerminalSize
	done  chan struct{}
}

func (q *sizeQueue) Next() *remotecommand.TerminalSize {
	select {
	case sz := <-q.sizes:
		return &sz
	case <-q.done:
		return nil
	}
}

// noStderr, as StreamOptions.Stderr, has stream open no stderr stream: the
// client must open the streams its query asks for.
var noStderr io.Writer = new(bytes.Buffer)

// stream runs e, capturing stdout and stderr.
func stream(t *testing.T, e remotecommand.Executor, opts remotecommand.StreamOptions) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	if opts.Stdout == nil {
		opts.Stdout = &out
	}
	switch {
	case opts.Stderr == noStderr:
		opts.Stderr = nil
	case opts.Stderr == nil && !opts.Tty:
		opts.Stderr = &errOut
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = e.StreamWithContext(ctx, opts)
	return out.String(), errOut.String(), err
}

func exitCode(err error) (int, bool) {
	var ee utilexec.ExitError
	if errors.As(err, &ee) && ee.Exited() {
		return ee.ExitStatus(), true
	}
	return 0, false
}

func TestExec(t *testing.T) {
	for _, tls := range []bool{false, true} {
		for name, newExecutor := range executors {
			t.Run(fmt.Sprintf("%s/tls=%v", name, tls), func(t *testing.T) {
				t.Parallel()
				ts := newTestServer(t, tls, nil)

				t.Run("stdin to EOF, stdout, stderr", func(t *testing.T) {
					e := newExecutor(t, ts, ts.url("/exec", execQuery(true, true, true, false, "upper")))
					stdout, stderr, err := stream(t, e, remotecommand.StreamOptions{Stdin: strings.NewReader("hello\nworld\n")})
					if err != nil {
						t.Fatalf("exec: %v", err)
					}
					if stdout != "HELLO\nWORLD\n" || stderr != "bye\n" {
						t.Errorf("stdout %q, stderr %q; want HELLO\\nWORLD\\n, bye\\n", stdout, stderr)
					}
				})

				t.Run("exit code", func(t *testing.T) {
					for _, want := range []int{3, 1, 255} {
						e := newExecutor(t, ts, ts.url("/exec", execQuery(true, true, true, false, "upper", strconv.Itoa(want))))
						stdout, _, err := stream(t, e, remotecommand.StreamOptions{Stdin: strings.NewReader("x")})
						if code, ok := exitCode(err); !ok || code != want {
							t.Errorf("err = %v (%T); want exit code %d", err, err, want)
						}
						if stdout != "X" {
							t.Errorf("stdout %q before exit %d, want X", stdout, want)
						}
					}
				})

				t.Run("stdout only", func(t *testing.T) {
					e := newExecutor(t, ts, ts.url("/exec", execQuery(false, true, false, false, "echo", "a", "b")))
					stdout, _, err := stream(t, e, remotecommand.StreamOptions{Stderr: noStderr})
					if err != nil || stdout != "a b\n" {
						t.Errorf("stdout %q, err %v; want \"a b\\n\", nil", stdout, err)
					}
				})

				t.Run("exec error", func(t *testing.T) {
					e := newExecutor(t, ts, ts.url("/exec", execQuery(false, true, true, false, "fail")))
					_, _, err := stream(t, e, remotecommand.StreamOptions{})
					if err == nil || !strings.Contains(err.Error(), "no such container") {
						t.Errorf("err = %v; want one saying no such container", err)
					}
					if _, ok := exitCode(err); ok {
						t.Errorf("err = %v is an exit code", err)
					}
				})

				t.Run("tty and resize", func(t *testing.T) {
					q := &sizeQueue{sizes: make(chan remotecommand.TerminalSize, 2), done: make(chan struct{})}
					defer close(q.done)
					q.sizes <- remotecommand.TerminalSize{Width: 80, Height: 24}
					q.sizes <- remotecommand.TerminalSize{Width: 132, Height: 43}
					// kubectl -t asks for stderr too; the server drops it.
					e := newExecutor(t, ts, ts.url("/exec", execQuery(true, true, true, true, "resize", "2")))
					stdout, _, err := stream(t, e, remotecommand.StreamOptions{
						Stdin: strings.NewReader(""), Tty: true, TerminalSizeQueue: q,
					})
					if err != nil || stdout != "80x24\n132x43\n" {
						t.Errorf("stdout %q, err %v; want the two sizes", stdout, err)
					}
				})

				t.Run("attach", func(t *testing.T) {
					e := newExecutor(t, ts, ts.url("/attach", execQuery(true, true, false, false)))
					stdout, _, err := stream(t, e, remotecommand.StreamOptions{Stdin: strings.NewReader("attached\n"), Stderr: noStderr})
					if err != nil || stdout != "attached\n" {
						t.Errorf("stdout %q, err %v; want attached", stdout, err)
					}
				})

				t.Run("client goes away", func(t *testing.T) {
					e := newExecutor(t, ts, ts.url("/exec", execQuery(true, true, false, false, "wait")))
					ctx, cancel := context.WithCancel(context.Background())
					errc := make(chan error, 1)
					pr, pw := io.Pipe()
					defer pw.Close()
					go func() { errc <- e.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: pr, Stdout: io.Discard}) }()
					time.Sleep(200 * time.Millisecond)
					cancel()
					<-errc
					select {
					case <-ts.cancelled:
					case <-time.After(10 * time.Second):
						t.Fatal("exec's context not cancelled after the client left")
					}
				})
			})
		}
	}
}

// TestExecSPDYProtocols covers the SPDY protocols kubectl before 1.30 and
// older clients negotiate.
func TestExecSPDYProtocols(t *testing.T) {
	ts := newTestServer(t, false, nil)
	for _, proto := range []string{
		remotecommandconsts.StreamProtocolV4Name,
		remotecommandconsts.StreamProtocolV3Name,
		remotecommandconsts.StreamProtocolV2Name,
		remotecommandconsts.StreamProtocolV1Name,
	} {
		t.Run(proto, func(t *testing.T) {
			newExecutor := func(u *url.URL) remotecommand.Executor {
				tr, up, err := spdy.RoundTripperFor(ts.restConfig())
				if err != nil {
					t.Fatal(err)
				}
				e, err := remotecommand.NewSPDYExecutorForProtocols(tr, up, "POST", u, proto)
				if err != nil {
					t.Fatal(err)
				}
				return e
			}
			e := newExecutor(ts.url("/exec", execQuery(false, true, true, false, "echo", "hi")))
			stdout, _, err := stream(t, e, remotecommand.StreamOptions{})
			if err != nil || stdout != "hi\n" {
				t.Errorf("stdout %q, err %v; want hi", stdout, err)
			}
			if proto == remotecommandconsts.StreamProtocolV1Name {
				return // v1 may end before the error stream is read
			}
			e = newExecutor(ts.url("/exec", execQuery(false, true, true, false, "exit", "3")))
			_, _, err = stream(t, e, remotecommand.StreamOptions{})
			switch code, ok := exitCode(err); {
			case proto == remotecommandconsts.StreamProtocolV4Name:
				if !ok || code != 3 {
					t.Errorf("err = %v; want exit code 3", err)
				}
			case err == nil || !strings.Contains(err.Error(), "non-zero exit code"):
				t.Errorf("err = %v; want a non-zero exit code message", err)
			}
		})
	}
}

// TestExecWebSocketV4 covers the v4 binary protocol, the newest before v5.
func TestExecWebSocketV4(t *testing.T) {
	ts := newTestServer(t, false, nil)
	u := ts.url("/exec", execQuery(false, true, true, false, "echo", "hi"))
	e, err := remotecommand.NewWebSocketExecutorForProtocols(ts.restConfig(), "GET", u.String(), "v4.channel.k8s.io")
	if err != nil {
		t.Fatal(err)
	}
	if stdout, _, err := stream(t, e, remotecommand.StreamOptions{}); err != nil || stdout != "hi\n" {
		t.Errorf("stdout %q, err %v; want hi", stdout, err)
	}
	u = ts.url("/exec", execQuery(false, true, true, false, "exit", "42"))
	e, err = remotecommand.NewWebSocketExecutorForProtocols(ts.restConfig(), "GET", u.String(), "v4.channel.k8s.io")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := stream(t, e, remotecommand.StreamOptions{}); err == nil {
		t.Error("exit 42 reported no error")
	} else if code, ok := exitCode(err); !ok || code != 42 {
		t.Errorf("err = %v; want exit code 42", err)
	}
}

// TestExecWebSocketBase64 speaks v4.base64.channel.k8s.io by hand.
func TestExecWebSocketBase64(t *testing.T) {
	ts := newTestServer(t, false, nil)
	u := ts.url("/exec", execQuery(false, true, false, false, "echo", "hi"))
	u.Scheme = "ws"
	ws, resp, err := (&websocket.Dialer{Subprotocols: []string{"v4.base64.channel.k8s.io"}}).Dial(u.String(), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	defer ws.Close()
	if p := ws.Subprotocol(); p != "v4.base64.channel.k8s.io" {
		t.Fatalf("negotiated %q", p)
	}
	var stdout bytes.Buffer
	var status metav1.Status
	for {
		typ, msg, err := ws.ReadMessage()
		if err != nil {
			break
		}
		if typ != websocket.TextMessage || len(msg) == 0 {
			t.Fatalf("message type %d %q", typ, msg)
		}
		data, err := base64.StdEncoding.DecodeString(string(msg[1:]))
		if err != nil {
			t.Fatalf("message %q: %v", msg, err)
		}
		switch msg[0] {
		case '1':
			stdout.Write(data)
		case '3':
			if err := json.Unmarshal(data, &status); err != nil {
				t.Fatalf("status %q: %v", data, err)
			}
		}
	}
	if stdout.String() != "hi\n" || status.Status != metav1.StatusSuccess {
		t.Errorf("stdout %q, status %+v; want hi, Success", stdout.String(), status)
	}
}

// TestExecFallback: a WebSocket request the server does not support is an
// upgrade failure to client-go, so kubectl falls back to SPDY.
func TestExecFallback(t *testing.T) {
	ts := newTestServer(t, false, nil)
	u := ts.url("/exec", execQuery(false, true, true, false, "exit", "7"))
	ws, err := remotecommand.NewWebSocketExecutorForProtocols(ts.restConfig(), "GET", u.String(), "v9.channel.k8s.io")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := stream(t, ws, remotecommand.StreamOptions{}); !shouldFallback(err) {
		t.Fatalf("unsupported subprotocol: err = %v; want an upgrade failure", err)
	}
	e, err := remotecommand.NewFallbackExecutor(ws, spdyExecutor(t, ts, u), shouldFallback)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := stream(t, e, remotecommand.StreamOptions{}); err == nil {
		t.Error("fallback: no error")
	} else if code, ok := exitCode(err); !ok || code != 7 {
		t.Errorf("fallback: err = %v; want exit code 7", err)
	}
}

func TestSPDYHandshakeErrors(t *testing.T) {
	ts := newTestServer(t, false, nil)
	for _, tc := range []struct {
		name     string
		protocol string
		want     int
	}{
		{"no protocol", "", http.StatusBadRequest},
		{"unknown protocol", "v9.channel.k8s.io", http.StatusForbidden},
	} {
		req, _ := http.NewRequest("POST", ts.url("/exec", execQuery(false, true, false, false, "echo")).String(), nil)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "SPDY/3.1")
		if tc.protocol != "" {
			req.Header.Set(httpstream.HeaderProtocolVersion, tc.protocol)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, resp.StatusCode, tc.want)
		}
	}
}

func TestParseRequests(t *testing.T) {
	parse := func(q string) (*http.Request, error) {
		return http.NewRequest("GET", "http://x/exec?"+q, nil)
	}
	for _, tc := range []struct {
		query   string
		cmd     []string
		opts    Options
		wantErr bool
	}{
		{query: "command=ls&command=-l&stdout=true&container=c", cmd: []string{"ls", "-l"}, opts: Options{Container: "c", Stdout: true}},
		{query: "command=sh&stdin=1&stdout=true&stderr=true&tty=true", cmd: []string{"sh"}, opts: Options{Stdin: true, Stdout: true, TTY: true}},
		{query: "command=sh&stdin=false&stdout=0&stderr=TRUE", cmd: []string{"sh"}, opts: Options{Stderr: true}},
		{query: "stdout=true", wantErr: true},
		{query: "command=ls", wantErr: true},
		{query: "command=ls&stdout=false", wantErr: true},
	} {
		r, _ := parse(tc.query)
		cmd, opts, err := ParseExecRequest(r)
		if tc.wantErr {
			if !apierrors.IsBadRequest(err) {
				t.Errorf("%s: err = %v; want a BadRequest", tc.query, err)
			}
			continue
		}
		if err != nil || strings.Join(cmd, " ") != strings.Join(tc.cmd, " ") || opts != tc.opts {
			t.Errorf("%s: %q %+v %v; want %q %+v", tc.query, cmd, opts, err, tc.cmd, tc.opts)
		}
	}

	r, _ := parse("ports=80,443&ports=8080")
	if ports, err := ParsePortForwardRequest(r); err != nil || fmt.Sprint(ports) != "[80 443 8080]" {
		t.Errorf("ports = %v, %v", ports, err)
	}
	for _, q := range []string{"ports=0", "ports=65536", "ports=http", "ports="} {
		r, _ := parse(q)
		if _, err := ParsePortForwardRequest(r); !apierrors.IsBadRequest(err) {
			t.Errorf("%s: err = %v; want a BadRequest", q, err)
		}
	}
}
