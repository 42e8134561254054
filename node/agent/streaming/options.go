package streaming

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Timeouts of every session, the kubelet's values.
const (
	// IdleTimeout ends a session in which nothing was sent either way.
	IdleTimeout = 4 * time.Hour
	// StreamCreationTimeout bounds how long a SPDY client may take to open
	// the streams of an exec/attach session or of a forwarded connection.
	StreamCreationTimeout = 30 * time.Second
)

// Options are the streams an exec or attach client asked for, from the
// PodExecOptions / PodAttachOptions query parameters.
type Options struct {
	// Container is the container named in the query; empty if none was.
	Container string
	Stdin     bool
	Stdout    bool
	// Stderr is never set together with TTY: a terminal merges it into
	// Stdout, and clients open no stderr stream then.
	Stderr bool
	TTY    bool
}

// ParseExecRequest reads the command and the streams of a pods/exec request
// (query parameters command (repeated), container, stdin, stdout, stderr,
// tty). Its error is an *apierrors.StatusError with reason BadRequest.
func ParseExecRequest(r *http.Request) (cmd []string, opts Options, err error) {
	opts, err = ParseAttachRequest(r)
	if err != nil {
		return nil, Options{}, err
	}
	cmd = r.URL.Query()["command"]
	if len(cmd) == 0 {
		return nil, Options{}, apierrors.NewBadRequest("you must specify at least one command for the container")
	}
	return cmd, opts, nil
}

// ParseAttachRequest reads the streams of a pods/attach request (query
// parameters container, stdin, stdout, stderr, tty). Its error is an
// *apierrors.StatusError with reason BadRequest.
func ParseAttachRequest(r *http.Request) (Options, error) {
	q := r.URL.Query()
	opts := Options{
		Container: q.Get("container"),
		Stdin:     queryBool(q["stdin"]),
		Stdout:    queryBool(q["stdout"]),
		Stderr:    queryBool(q["stderr"]),
		TTY:       queryBool(q["tty"]),
	}
	if opts.TTY {
		opts.Stderr = false
	}
	if !opts.Stdin && !opts.Stdout && !opts.Stderr {
		return Options{}, apierrors.NewBadRequest("you must specify at least 1 of stdin, stdout, stderr")
	}
	return opts, nil
}

// ParsePortForwardRequest reads the ports of a pods/portforward request
// (query parameter ports, repeated or comma-separated). kubectl sends none:
// it names the port of each forwarded connection in the stream headers; only
// the WebSocket channel protocol needs them. Its error is an
// *apierrors.StatusError with reason BadRequest.
func ParsePortForwardRequest(r *http.Request) ([]int32, error) {
	var ports []int32
	for _, v := range r.URL.Query()["ports"] {
		for _, s := range strings.Split(v, ",") {
			p, err := parsePort(strings.TrimSpace(s))
			if err != nil {
				return nil, apierrors.NewBadRequest(err.Error())
			}
			ports = append(ports, p)
		}
	}
	return ports, nil
}

func parsePort(s string) (int32, error) {
	p, err := strconv.ParseUint(s, 10, 16)
	if err != nil || p == 0 {
		return 0, fmt.Errorf("invalid port %q: must be a number between 1 and 65535", s)
	}
	return int32(p), nil
}

// queryBool reads a boolean query parameter as the apiserver does: absent is
// false, "0" and "false" are false, anything else is true.
func queryBool(vals []string) bool {
	if len(vals) == 0 {
		return false
	}
	return vals[0] != "0" && !strings.EqualFold(vals[0], "false")
}
