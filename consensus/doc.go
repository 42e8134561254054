// Package consensus replicates a caller-supplied state machine with Raft.
//
// It wraps github.com/hashicorp/raft with everything Shoal needs around it: a
// raft-wal log and stable store, a file snapshot store, a mutual-TLS stream
// layer on one TCP port, command batching on the leader, forwarding of writes
// and read-index requests from followers to the leader, and voter management.
// It is a leaf package: it knows nothing of Shoal's object model and never
// imports anything under node/ (deps_test.go enforces this). The caller's
// [FSM] sees opaque commands.
//
// # Writes
//
// [Node.Propose] may be called on any node. The leader queues commands from
// concurrent callers and packs them into one raft entry (up to
// [Config.MaxBatch] commands). A follower forwards the command to the leader
// over the stream layer, together with the other commands that queued while
// its previous forward batch was out, and the leader batches them the same
// way. Every command in an
// entry is applied with that entry's index, so commands batched together share
// an index; Apply is called in entry order, so an FSM that needs a distinct
// version per command can derive one from the index and the command's
// position. Propose retries only while the command has certainly not been
// applied; when the outcome cannot be known it returns an error matching
// [ErrUnknownOutcome]. Errors after which a retry by the caller may help match
// [ErrUnavailable].
//
// # Reads
//
// Every node applies the whole log to its own FSM, so reads go to the local
// replica. For a linearizable read, call [Node.ReadIndex] and then
// [Node.WaitApplied] with the index it returns before reading. A node that
// needs read-your-writes after a forwarded Propose calls WaitApplied with the
// returned index. Use WaitApplied (or [Node.AppliedIndex]) rather than
// counting indexes seen by FSM.Apply: raft also writes entries that never
// reach the FSM (no-ops, configuration changes), and a read index may point at
// one of those.
//
// # Concurrency
//
// All Node methods are safe for concurrent use. FSM.Apply, FSM.Snapshot and
// FSM.Restore are called from one raft goroutine, never concurrently with each
// other. FSMSnapshot.Persist runs in another goroutine, concurrently with
// Apply. FSM methods must not call back into the Node (Propose from Apply
// would deadlock). [Node.LeadershipChanges] never blocks raft: it holds only
// the latest value, and reports true only once the new leader has applied its
// whole log, so leader-only work started on it sees current state. A Config
// must not be changed after it is handed to [New].
package consensus
