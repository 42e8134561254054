// Package containerd implements container.Runtime over containerd, with the
// v1.7 Go client (which drives Debian's containerd 1.6 daemon), and Daemon,
// which starts and supervises a private containerd for one node.
//
// Everything Shoal makes lives in a containerd namespace of its own
// (Config.Namespace, "shoal" by default). Per container: a container record,
// an overlayfs snapshot named after the container ID, and a task whose
// stdout and stderr go to the spec's LogPath: through Config.LogBinary (a
// logger process the shim starts, writing rotated CRI-format logs), or
// appended raw by the shim when none is set. A container with stdin or a
// terminal runs with FIFOs instead, read by the same logging binary in FIFO
// mode, which the runtime starts detached (see stdio.go); AttachStdin
// writes to its stdin FIFO, ResizeTTY resizes its terminal. Shims outlive
// both the daemon and this process, so a new Runtime on the same daemon (an
// agent restart) finds running containers with List and Status, and keeps
// reporting their exits.
//
// Paths containerd 1.6 keeps outside --state are moved under the node's
// directory so two nodes on one machine never collide: runc's state (runc
// option Root, Config.RuncRoot) and exec FIFOs (Config.FIFODir). Shim sockets
// stay in /run/containerd/s, named from the daemon address. runc leaves empty
// cgroup directories behind; RemoveContainer deletes them in every hierarchy.
//
// State the daemon does not keep (start time, the last exit when its task is
// gone, whether it was OOM-killed) is stored in container labels under
// container.ReservedLabelPrefix, so it survives agent restarts too.
//
// Exits come from one waiter goroutine per started container, blocked in
// the tasks Wait call and retrying it while the daemon restarts. OOM kills
// are read from the container's memory cgroup (oom_kill counter) at exit,
// before the cgroup is deleted.
//
// Images travel between nodes without a registry: RegistryHandler serves
// the runtime's content store read-only over the OCI distribution API (the
// node mounts it at /v2/ behind its mTLS), and PullImage uses other nodes'
// handlers as registry mirrors, asked in order before the image's own
// registry.
//
// Runtime and Daemon are safe for concurrent use; see node/container for the
// per-container ordering rules.
package containerd
