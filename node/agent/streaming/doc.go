// Package streaming is the server side of the pods/exec, pods/attach and
// pods/portforward subresources: it speaks every protocol stock kubectl and
// client-go use, and hands the caller plain streams.
//
// Protocols:
//
//   - exec and attach over WebSocket: v5.channel.k8s.io (kubectl ≥ 1.30; adds
//     the stdin close signal), v4.channel.k8s.io, v4.base64.channel.k8s.io and
//     the older channel.k8s.io / base64.channel.k8s.io (also taken when no
//     subprotocol is offered). A WebSocket request offering only other
//     subprotocols is refused with 403 before any upgrade, which client-go
//     reads as an upgrade failure and kubectl answers by falling back to SPDY.
//   - exec and attach over SPDY/3.1: remote command protocols v1–v4 (kubectl
//     1.27–1.29, and the fallback of newer ones).
//   - portforward over SPDY/3.1 (portforward.k8s.io), over SPDY tunnelled
//     through a WebSocket (SPDY/3.1+portforward.k8s.io, kubectl ≥ 1.31; another
//     tunnelling subprotocol is refused with 400, so kubectl falls back to
//     SPDY), and the kubelet's WebSocket channel protocol (v4.channel.k8s.io,
//     ports from the query).
//
// Exit codes travel as a NonZeroExitCode Status on the error stream (v4, v5),
// exactly as the kubelet writes them, so `kubectl exec pod -- sh -c 'exit 3'`
// exits 3. Protocols older than v4 carry only an error message.
//
// The handlers upgrade the connection, so they must be reached through an
// http.ResponseWriter that implements http.Hijacker (directly or through
// Unwrap) over HTTP/1.1, and routed for both GET (WebSocket) and POST (SPDY).
// Authentication, authorization and finding the container are the caller's
// business; this package knows nothing of pods.
//
// A client-go quirk: its WebSocket executor reads the connection before it has
// created its streams, dropping what arrives meanwhile (and failing if the
// connection ends then). A process takes milliseconds to start, which covers
// that window; an ExecFunc that answers without starting one should not.
//
// Concurrency: every Serve function blocks until its session ends and may be
// called concurrently for different requests. The Streams handed to an
// ExecFunc or AttachFunc are valid until it returns; Stdout and Stderr may be
// written from different goroutines.
package streaming
