package logfile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// drainTimeout bounds how long RunLogger goes on reading once its context
// ends (the shim's SIGTERM): the shim closes the pipes before it signals,
// so the rest is normally read at once; the shim itself kills its logger
// 12 s after the signal.
var drainTimeout = 5 * time.Second

// LoggerArg encodes cfg as the one argument RunLogger takes (JSON). The
// containerd shim passes a logging binary's arguments as URL query pairs
// in map order, so a caller that needs a fixed argv sends exactly one pair:
// the logger subcommand as the key, this as the value.
func LoggerArg(cfg Config) (string, error) {
	if err := cfg.Validate(); err != nil {
		return "", err
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return "", fmt.Errorf("logfile: %w", err)
	}
	return string(b), nil
}

// ParseLoggerArgs decodes the arguments LoggerArg made.
func ParseLoggerArgs(args []string) (Config, error) {
	var cfg Config
	if len(args) != 1 {
		return cfg, fmt.Errorf("logfile: logger takes one argument, its JSON config; got %d", len(args))
	}
	if err := json.Unmarshal([]byte(args[0]), &cfg); err != nil {
		return cfg, fmt.Errorf("logfile: logger config: %w", err)
	}
	return cfg, cfg.Validate()
}

// RunLogger is the body of a logging process: it opens the log args
// describe (see LoggerArg), calls ready, and copies stdout and stderr into
// it until both reach end of file; then it writes the unfinished lines as P
// records, closes the log and returns.
//
// It never stops reading early, since a container whose pipe is full
// blocks and one whose pipe has no reader dies of SIGPIPE: bad arguments,
// a log it cannot open or write are reported in the returned error while
// the output is read and dropped. When ctx ends it goes on until the
// pipes close, for at most 5 seconds.
func RunLogger(ctx context.Context, args []string, stdout, stderr io.Reader, ready func() error) error {
	var errs []error
	cfg, err := ParseLoggerArgs(args)
	var w *Writer
	if err == nil {
		w, err = Open(cfg)
	}
	if err != nil {
		errs = append(errs, err)
		w = nil
	}
	if ready != nil {
		if err := ready(); err != nil {
			errs = append(errs, fmt.Errorf("logfile: signalling ready: %w", err))
		}
	}
	return copyToLog(ctx, w, errs, stdout, stderr)
}

// copyToLog is the rest of RunLogger once the log is open: it copies
// stdout and stderr (either may be nil) into w (nil drops them) until both
// reach end of file, or drainTimeout after ctx ends, then closes w. errs
// are the failures so far; they are returned with the ones that follow.
func copyToLog(ctx context.Context, w *Writer, errs []error, stdout, stderr io.Reader) error {
	results := make(chan error, 2)
	left := 0
	for _, src := range []struct {
		s Stream
		r io.Reader
	}{{Stdout, stdout}, {Stderr, stderr}} {
		if src.r == nil {
			continue
		}
		left++
		go func() { results <- copyStream(w, src.s, src.r) }()
	}
	stop := ctx.Done()
	var giveUp <-chan time.Time
	for left > 0 {
		select {
		case err := <-results:
			left--
			if err != nil {
				errs = append(errs, err)
			}
		case <-stop:
			stop = nil
			t := time.NewTimer(drainTimeout)
			defer t.Stop()
			giveUp = t.C
		case <-giveUp:
			errs = append(errs, fmt.Errorf("logfile: output still open %v after the logger was told to stop", drainTimeout))
			left = 0
		}
	}
	if w != nil {
		if err := w.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// copyStream copies r into stream s of w (drops it when w is nil) until
// end of file. Write errors do not stop it; the first is returned.
func copyStream(w *Writer, s Stream, r io.Reader) error {
	buf := make([]byte, 32<<10)
	var werr error
	for {
		n, err := r.Read(buf)
		if n > 0 && w != nil {
			if _, err := w.WriteStream(s, buf[:n]); err != nil && werr == nil {
				werr = err
			}
		}
		if err == io.EOF {
			return werr
		} else if err != nil {
			return errors.Join(fmt.Errorf("logfile: reading %s: %w", s, err), werr)
		}
	}
}

// LoggerCommand is the hidden shoal subcommand that runs LoggerMain: the
// agent's containerd Config.LogBinaryArgs.
const LoggerCommand = "container-logger"
