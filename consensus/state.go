package consensus

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

// HasExistingState reports whether dataDir holds raft state: a log, a
// current term or a snapshot. A node with existing state must never be
// bootstrapped again. It fails with ErrDataDirInUse while a Node runs on
// dataDir.
func HasExistingState(dataDir string) (bool, error) {
	snapDir := filepath.Join(dataDir, "snapshots")
	if _, err := os.Stat(snapDir); err == nil {
		snaps, err := raft.NewFileSnapshotStoreWithLogger(dataDir, snapshotsRetained, hclog.NewNullLogger())
		if err != nil {
			return false, fmt.Errorf("consensus: opening snapshot store: %w", err)
		}
		list, err := snaps.List()
		if err != nil {
			return false, fmt.Errorf("consensus: listing snapshots: %w", err)
		}
		if len(list) > 0 {
			return true, nil
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("consensus: %w", err)
	}

	walDir := filepath.Join(dataDir, walDirName)
	if _, err := os.Stat(filepath.Join(walDir, metadb.FileName)); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("consensus: %w", err)
	}
	meta, w, err := openWAL(walDir, hclog.NewNullLogger(), 0)
	if err != nil {
		return false, err
	}
	defer func() { _ = closeWAL(w, meta) }()
	has, err := raft.HasExistingState(w, w, raft.NewDiscardSnapshotStore())
	if err != nil {
		return false, fmt.Errorf("consensus: inspecting raft log: %w", err)
	}
	return has, nil
}

// openWAL opens the raft-wal in dir with a meta store we own: WAL.Close does
// not close it, and its bolt file lock would otherwise outlive the WAL.
func openWAL(dir string, logger hclog.Logger, segmentSize int) (*metadb.BoltMetaDB, *wal.WAL, error) {
	if err := checkNotLocked(filepath.Join(dir, metadb.FileName)); err != nil {
		return nil, nil, err
	}
	meta := &metadb.BoltMetaDB{}
	// A zero segment size selects raft-wal's default.
	w, err := wal.Open(dir, wal.WithMetaStore(meta), wal.WithLogger(logger), wal.WithSegmentSize(segmentSize))
	if err != nil {
		_ = meta.Close()
		return nil, nil, fmt.Errorf("consensus: opening raft log in %s: %w", dir, err)
	}
	return meta, w, nil
}

func closeWAL(w *wal.WAL, meta *metadb.BoltMetaDB) error {
	return errors.Join(w.Close(), meta.Close())
}

// checkNotLocked fails with ErrDataDirInUse if another open WAL holds the
// bolt lock on path. Without this check, opening would block forever.
func checkNotLocked(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("consensus: %w", err)
	}
	defer func() { _ = f.Close() }()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("%w: %s is locked", ErrDataDirInUse, path)
		}
		return fmt.Errorf("consensus: locking %s: %w", path, err)
	}
	return syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
}
