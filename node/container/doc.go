// Package container is the node's container runtime port: a small,
// context-first interface (Runtime) over whatever actually runs containers,
// plus the plain-data types that cross it. It knows nothing of pods, the API
// or containerd: node/agent translates pods into ContainerSpecs, and
// node/container/containerd implements Runtime over containerd. Test code
// uses node/container/containertest, a scriptable in-memory Runtime that fails
// the way the real one does. node/container/image builds OCI image archives
// without a registry.
//
// # Contract
//
// Container IDs are chosen by the caller, must match ValidID and must be
// unique on the machine, not only on the node: several nodes started on one
// host share one cgroup tree, so derive IDs from the pod UID.
//
// Errors wrap the sentinels below so callers can use errors.Is: ErrNotFound
// for an absent image or container, ErrAlreadyExists for a duplicate ID,
// ErrInvalid for a spec that can never run, ErrNotRunning for an exec into a
// container that is not running. Removing what is gone and stopping what is
// stopped are successes.
//
// # Concurrency
//
// Runtime implementations are safe for concurrent use. Calls on different
// containers run in parallel; the mutating calls on one container (Create,
// Start, Stop, Remove) are serialized in arrival order. Exec, AttachStdin,
// ResizeTTY, Status and List take no per-container lock, so an Exec may run
// for as long as it likes.
//
// Exits has a single consumer. It is fed through an unbounded queue, so the
// runtime never blocks on a slow consumer and never drops an exit; an exit is
// delivered once per run of a container's main process, including exits of
// containers that Remove killed. Exits of containers that stopped before the
// runtime was created are not delivered: after a restart, callers learn them
// from List. The channel is closed when the implementation is closed.
//
// Values passed in (specs, readers, writers) belong to the caller again when
// the call returns, except ExecSpec streams, which are used until Exec
// returns. Returned values are fresh copies the caller may keep and mutate.
package container
