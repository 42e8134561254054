// Package logfile writes and reads container log files in the CRI format
// kubelet uses, rotated by size, and holds the body of the containerd
// logging process that writes them. It imports nothing but the standard
// library.
//
// # Format
//
// Each record is one line:
//
//	2026-11-25T10:04:05.123456789Z stdout F hello world
//
// a UTC RFC 3339 timestamp with nanoseconds (trailing zeros trimmed, as
// time.RFC3339Nano does), the stream (stdout or stderr), a tag and the
// content, which never holds a newline. Tag F ends a line; tag P is a chunk
// of a line that goes on in the stream's next record. A line longer than
// Config.MaxLine (16 KiB) is written as P chunks of MaxLine bytes and an F
// record with the rest. A line still without its newline is written as a P
// record once it has waited Config.PartialFlush (100 ms), and at Close: a
// process's last line without a newline therefore ends its log as a P
// record, as containerd's CRI logger writes it, and Read shows it without
// a newline, as kubelet does. (A later Writer appending to the same file,
// the next run of the container, first ends such a line with an empty F
// record, so the runs' output is not joined.) Readers join the chunks of a
// line per stream; a record's timestamp is when it was written, a line's
// is its first record's.
//
// # Rotation
//
// The current file is Config.Path. When a record would take it past
// Config.MaxSize (10 MiB), the Writer creates the next file as Path+".tmp",
// hard-links the current one to Path+"."+ a UTC timestamp in the
// fixed-width layout 20060102-150405.000000000 (0.log.20261125-100405.
// 123456789), renames the new file over Path, and deletes the oldest
// rotated files beyond Config.MaxFiles-1 (MaxFiles, 5, counts the current
// file). So Path always exists once a Writer has opened it, a rotated file
// keeps its name for good, and names sort in the order the files were
// written (a rotation never takes a name that sorts before an existing
// one, even if the clock steps back). A reader that holds a file open
// keeps reading it across a rotation and finds the file that came next by
// identity (device and inode) among the rotated names.
//
// # Writer and readers
//
// A Writer is safe for concurrent use and holds an exclusive flock on the
// file it writes, released when it closes or its process dies: Active
// tells a reader whether a writer is still at work. Any number of Read
// calls may run while one Writer writes; two Writers on one path at once
// are not supported.
//
// # The logging process
//
// RunLogger and LoggerMain are the body of a containerd logging binary
// (cio.BinaryIO), `shoal container-logger` (LoggerCommand): the shim starts
// it with the container's stdout and stderr pipes as file descriptors 3
// and 4 and a pipe on 5 that it closes once the log is open. The logger is
// the shim's child, so it outlives the agent and the containerd daemon. The
// shim keeps the pipes' write ends open until it deletes the task: only
// then does the logger see end of file, write what is left, and exit. Until
// then it writes as it reads (and unfinished lines after PartialFlush), so
// the log is complete shortly after the container exits; see
// ReadOptions.Done for following a log to the container's end.
//
// A container with stdin or a terminal cannot use binary IO, which has no
// stdin: its streams are FIFOs the runtime makes, and the same binary runs
// in FIFO mode (FIFOCommand, FIFOLogger), started by the runtime itself,
// detached, rather than by the shim. It writes the same records, rotates
// the same way, and exits when the shim closes the output FIFOs.
package logfile
