package logfile

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
)

// FIFOCommand is the first argument of the logging process in FIFO mode,
// after LoggerCommand: LoggerMain runs RunFIFOLogger when it sees it.
const FIFOCommand = "fifo"

// FIFOLogger is the logging process of a container whose standard streams
// are FIFOs the runtime made (a container with stdin or a terminal), rather
// than pipes from the shim (binary IO, which has no stdin). The runtime
// starts it detached, in a session of its own, before it creates the task:
// the shim opens the FIFOs when it creates the task, and waits for their
// readers. It copies Stdout and Stderr into Log as RunLogger does, until
// both reach end of file (the shim closes them when the container's output
// ends: when its processes are gone), and exits.
//
// The container's stdin FIFO is none of its business: the shim holds it
// open for writing itself until the runtime closes it (CloseIO), so
// writers may come and go without the container seeing its end.
type FIFOLogger struct {
	// Stdout and Stderr are the FIFOs the container's output comes from.
	// Stderr is "" for a terminal, which has one output stream, logged as
	// stdout.
	Stdout string
	Stderr string
	// Log is where the output goes; nil drops it.
	Log *Config
}

// Validate reports a FIFOLogger RunFIFOLogger cannot run.
func (l FIFOLogger) Validate() error {
	if l.Stdout == "" {
		return errors.New("logfile: fifo logger without a stdout FIFO")
	}
	for _, p := range []string{l.Stdout, l.Stderr} {
		if p != "" && !filepath.IsAbs(p) {
			return fmt.Errorf("logfile: fifo %q is not absolute", p)
		}
	}
	if l.Log != nil {
		return l.Log.Validate()
	}
	return nil
}

// Args are the arguments of the logging process, after LoggerCommand:
//
//	fifo --stdout PATH [--stderr PATH] [CONFIG]
//
// where CONFIG is LoggerArg's JSON, absent when Log is nil.
func (l FIFOLogger) Args() ([]string, error) {
	if err := l.Validate(); err != nil {
		return nil, err
	}
	args := []string{FIFOCommand}
	for _, f := range []struct{ name, path string }{{"stdout", l.Stdout}, {"stderr", l.Stderr}} {
		if f.path != "" {
			args = append(args, "--"+f.name, f.path)
		}
	}
	if l.Log != nil {
		arg, err := LoggerArg(*l.Log)
		if err != nil {
			return nil, err
		}
		args = append(args, arg)
	}
	return args, nil
}

// ParseFIFOArgs decodes the arguments Args made (FIFOCommand first).
func ParseFIFOArgs(args []string) (FIFOLogger, error) {
	var l FIFOLogger
	if len(args) == 0 || args[0] != FIFOCommand {
		return l, fmt.Errorf("logfile: fifo logger arguments %q do not start with %q", args, FIFOCommand)
	}
	fs := flag.NewFlagSet(FIFOCommand, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&l.Stdout, "stdout", "", "")
	fs.StringVar(&l.Stderr, "stderr", "", "")
	if err := fs.Parse(args[1:]); err != nil {
		return l, fmt.Errorf("logfile: fifo logger arguments: %w", err)
	}
	switch fs.NArg() {
	case 0:
	case 1:
		cfg, err := ParseLoggerArgs(fs.Args())
		if err != nil {
			return l, err
		}
		l.Log = &cfg
	default:
		return l, fmt.Errorf("logfile: fifo logger takes at most one argument after its flags, its JSON config; got %q", fs.Args())
	}
	return l, l.Validate()
}
