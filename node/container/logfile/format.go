package logfile

import (
	"bytes"
	"time"
)

// Stream is one of a container's output streams.
type Stream string

// The streams a log file holds.
const (
	Stdout Stream = "stdout"
	Stderr Stream = "stderr"
)

// index is s's slot in per-stream arrays; -1 for an unknown stream.
func (s Stream) index() int {
	switch s {
	case Stdout:
		return 0
	case Stderr:
		return 1
	}
	return -1
}

var streams = [2]Stream{Stdout, Stderr}

// The tags of a record: a full line, or a chunk of one.
const (
	tagFull    = 'F'
	tagPartial = 'P'
)

// record is one parsed line of a log file. content aliases the line it was
// parsed from.
type record struct {
	ts      time.Time
	stream  Stream
	partial bool
	content []byte
}

// appendRecord appends the record for head+tail (the content in two parts,
// so a buffered start of a line needs no copy) to dst.
func appendRecord(dst []byte, ts time.Time, s Stream, partial bool, head, tail []byte) []byte {
	dst = ts.UTC().AppendFormat(dst, time.RFC3339Nano)
	dst = append(dst, ' ')
	dst = append(dst, s...)
	if partial {
		dst = append(dst, ' ', tagPartial, ' ')
	} else {
		dst = append(dst, ' ', tagFull, ' ')
	}
	dst = append(dst, head...)
	dst = append(dst, tail...)
	return append(dst, '\n')
}

// parseRecord parses one line of a log file (without its newline). Lines
// that are not records (a torn write, a file in another format) report
// false. Tags may carry ":"-separated extras, as the CRI allows; only the
// first, P or F, counts.
func parseRecord(line []byte) (record, bool) {
	var r record
	i := bytes.IndexByte(line, ' ')
	if i <= 0 {
		return r, false
	}
	ts, err := time.Parse(time.RFC3339Nano, string(line[:i]))
	if err != nil {
		return r, false
	}
	rest := line[i+1:]
	switch {
	case bytes.HasPrefix(rest, []byte("stdout ")):
		r.stream = Stdout
	case bytes.HasPrefix(rest, []byte("stderr ")):
		r.stream = Stderr
	default:
		return r, false
	}
	rest = rest[len(r.stream)+1:]
	tag := rest
	if j := bytes.IndexByte(rest, ' '); j >= 0 {
		tag, r.content = rest[:j], rest[j+1:]
	}
	if j := bytes.IndexByte(tag, ':'); j >= 0 {
		tag = tag[:j]
	}
	if len(tag) != 1 || (tag[0] != tagFull && tag[0] != tagPartial) {
		return r, false
	}
	r.ts = ts
	r.partial = tag[0] == tagPartial
	return r, true
}
