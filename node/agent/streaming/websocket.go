package streaming

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/httpstream/wsstream"
	remotecommandconsts "k8s.io/apimachinery/pkg/util/remotecommand"
)

// WebSocket subprotocols of exec and attach; v5 adds the close signal.
const (
	v5BinaryWebsocketProtocol = remotecommandconsts.StreamProtocolV5Name
	v4BinaryWebsocketProtocol = "v4." + wsstream.ChannelWebSocketProtocol
	v4Base64WebsocketProtocol = "v4." + wsstream.Base64ChannelWebSocketProtocol
)

// writeStatusDeadline bounds the write of the final status, as the
// apiserver's StreamTranslator does.
const writeStatusDeadline = 10 * time.Second

// openWebSocketSession upgrades r to a WebSocket carrying the channels
// stdin (0), stdout (1), stderr (2), error (3) and resize (4), the way the
// kubelet (v1–v4) and the apiserver's StreamTranslator (v5) do.
func openWebSocketSession(w http.ResponseWriter, r *http.Request, opts Options) (*session, error) {
	channels := []wsstream.ChannelType{
		remotecommandconsts.StreamStdIn:  readChannel(opts.Stdin),
		remotecommandconsts.StreamStdOut: writeChannel(opts.Stdout),
		remotecommandconsts.StreamStdErr: writeChannel(opts.Stderr),
		remotecommandconsts.StreamErr:    wsstream.WriteChannel,
		remotecommandconsts.StreamResize: wsstream.ReadChannel,
	}
	binary := wsstream.ChannelProtocolConfig{Binary: true, Channels: channels}
	base64 := wsstream.ChannelProtocolConfig{Binary: false, Channels: channels}
	conn := wsstream.NewConn(map[string]wsstream.ChannelProtocolConfig{
		v5BinaryWebsocketProtocol:               binary,
		v4BinaryWebsocketProtocol:               binary,
		v4Base64WebsocketProtocol:               base64,
		wsstream.ChannelWebSocketProtocol:       binary,
		wsstream.Base64ChannelWebSocketProtocol: base64,
		"":                                      binary,
	})
	conn.SetIdleTimeout(IdleTimeout)
	// On a protocol mismatch Open answers 403 itself, before any upgrade:
	// client-go sees an upgrade failure and falls back to SPDY.
	protocol, streams, err := conn.Open(hijackable(w), r)
	if err != nil {
		return nil, fmt.Errorf("upgrading to websocket: %w", err)
	}

	// An empty message on the lowest writable channel tells the client that
	// the connection is established.
	switch {
	case opts.Stdout:
		_, err = streams[remotecommandconsts.StreamStdOut].Write(nil)
	case opts.Stderr:
		_, err = streams[remotecommandconsts.StreamStdErr].Write(nil)
	default:
		_, err = streams[remotecommandconsts.StreamErr].Write(nil)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("writing to new websocket: %w", err)
	}

	s := &session{
		conn:   conn,
		resize: streams[remotecommandconsts.StreamResize],
	}
	if opts.Stdin {
		s.stdin = streams[remotecommandconsts.StreamStdIn]
	}
	if opts.Stdout {
		s.stdout = streams[remotecommandconsts.StreamStdOut]
	}
	if opts.Stderr {
		s.stderr = streams[remotecommandconsts.StreamStdErr]
	}
	errStream := streams[remotecommandconsts.StreamErr]
	switch protocol {
	case v5BinaryWebsocketProtocol, v4BinaryWebsocketProtocol, v4Base64WebsocketProtocol:
		s.writeStatus = func(st metav1.Status) error {
			b, err := json.Marshal(st)
			if err != nil {
				return err
			}
			conn.SetWriteDeadline(writeStatusDeadline)
			_, err = errStream.Write(b)
			return err
		}
	default:
		s.writeStatus = textStatusWriter(errStream)
	}
	return s, nil
}

func readChannel(real bool) wsstream.ChannelType {
	if real {
		return wsstream.ReadChannel
	}
	return wsstream.IgnoreChannel
}

func writeChannel(real bool) wsstream.ChannelType {
	if real {
		return wsstream.WriteChannel
	}
	return wsstream.IgnoreChannel
}
