package containerd

import (
	"os"
	"path/filepath"

	"github.com/containerd/containerd/cio"

	"github.com/shoal-dev/shoal/node/container/logfile"
)

// logIO is how a run of a container writes its stdout and stderr to path:
// through Config.LogBinary when set (CRI format, rotated), else appended
// raw by the shim.
//
// The logging process is the shim's child and holds the pipes' read ends;
// the shim keeps their write ends open until the task is deleted, so the
// logger sees end of file (writes what is left, then exits) only when
// deleteTask runs, not when the container exits. It writes as it reads,
// and an unfinished last line after logfile.DefaultPartialFlush, so the
// log is complete shortly after the exit all the same.
func (r *Runtime) logIO(path string) (cio.Creator, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if r.cfg.LogBinary == "" {
		return cio.LogFile(path), nil
	}
	arg, err := logfile.LoggerArg(logfile.Config{Path: path, MaxSize: r.cfg.LogMaxSize, MaxFiles: r.cfg.LogMaxFiles})
	if err != nil {
		return nil, err
	}
	return cio.BinaryIO(r.cfg.LogBinary, map[string]string{r.cfg.LogBinaryArgs[0]: arg}), nil
}
