package consensus

import (
	"errors"
	"fmt"
)

var (
	// ErrUnavailable means no leader could be reached, or quorum is lost, before
	// the context ended. Nothing was applied unless the error also matches
	// ErrUnknownOutcome. Callers map it to HTTP 503.
	ErrUnavailable = errors.New("consensus: unavailable")

	// ErrUnknownOutcome means the command reached a leader but no answer came
	// back (leadership changed, the connection broke or the context ended while
	// the entry was in flight). The command may or may not be applied, now or
	// later. It also matches ErrUnavailable.
	ErrUnknownOutcome error = unknownOutcomeError{}

	// ErrNotLeader is matched by *NotLeaderError.
	ErrNotLeader = errors.New("consensus: not the raft leader")

	// ErrShutdown is returned by a Node after Shutdown.
	ErrShutdown = errors.New("consensus: node is shut down")

	// ErrUnknownEntryType is the apply result of a raft entry whose type byte
	// this version does not know and which lacks the ignore bit.
	ErrUnknownEntryType = errors.New("consensus: unknown raft entry type")

	// ErrBadEntry is the apply result of a raft entry that cannot be decoded.
	ErrBadEntry = errors.New("consensus: malformed raft entry")

	// ErrCommandTooLarge is returned by Propose for commands above MaxCommandSize.
	ErrCommandTooLarge = errors.New("consensus: command too large")

	// ErrDataDirInUse is returned when another process (or Node) holds the raft
	// log in a data directory.
	ErrDataDirInUse = errors.New("consensus: data dir is in use")
)

type unknownOutcomeError struct{}

func (unknownOutcomeError) Error() string {
	return "consensus: outcome unknown (the command may or may not have been applied)"
}

// Is makes ErrUnknownOutcome match ErrUnavailable too.
func (unknownOutcomeError) Is(target error) bool { return target == ErrUnavailable }

// NotLeaderError is returned by leader-only operations on another node. The
// leader fields are a hint and are empty while no leader is known.
type NotLeaderError struct {
	LeaderID   string
	LeaderAddr string
}

func (e *NotLeaderError) Error() string {
	if e.LeaderID == "" && e.LeaderAddr == "" {
		return "consensus: not the raft leader (no leader known)"
	}
	return fmt.Sprintf("consensus: not the raft leader (leader is %s at %s)", e.LeaderID, e.LeaderAddr)
}

// Is makes every *NotLeaderError match ErrNotLeader.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }

// outcome classifies one attempt to commit a command.
type outcome uint8

const (
	outcomeOK      outcome = iota
	outcomeRetry           // certainly not applied; may be retried, possibly elsewhere
	outcomeUnknown         // may or may not have been applied
	outcomeFailed          // definitive error; do not retry
)

// result is the answer to one command (or one attempt at it).
type result struct {
	index   uint64
	resp    []byte
	outcome outcome
	err     error
}

func retryResult(err error) result   { return result{outcome: outcomeRetry, err: err} }
func unknownResult(err error) result { return result{outcome: outcomeUnknown, err: err} }
func failedResult(err error) result  { return result{outcome: outcomeFailed, err: err} }

var errNoLeader = errors.New("no raft leader known")
