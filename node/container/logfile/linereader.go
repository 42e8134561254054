package logfile

import (
	"bytes"
	"io"
)

// lineReader splits a growing file into lines. An unfinished last line
// stays buffered until its newline comes; lines longer than maxRecord are
// skipped.
type lineReader struct {
	r          io.Reader
	buf        []byte
	start, end int   // buf[start:end] is read but not returned
	scanned    int   // buf[start:scanned] has no newline
	off        int64 // the offset in the file of buf[start]
	skip       bool  // dropping an over-long line up to its newline
}

// newLineReader reads r, whose next byte is at offset off in its file.
func newLineReader(r io.Reader, off int64) *lineReader {
	return &lineReader{r: r, buf: make([]byte, 64<<10), off: off}
}

// next returns the next line without its newline, valid until the next
// call, and its offset, or io.EOF when no whole line is left for now.
func (l *lineReader) next() ([]byte, int64, error) {
	for {
		if i := bytes.IndexByte(l.buf[l.scanned:l.end], '\n'); i >= 0 {
			nl := l.scanned + i
			line, at := l.buf[l.start:nl], l.off
			l.off += int64(nl + 1 - l.start)
			l.start, l.scanned = nl+1, nl+1
			if l.skip {
				l.skip = false
				continue
			}
			return line, at, nil
		}
		l.scanned = l.end
		switch {
		case l.skip || l.end-l.start >= maxRecord:
			l.skip = true
			l.off += int64(l.end - l.start)
			l.start, l.end, l.scanned = 0, 0, 0
		case l.end == len(l.buf) && l.start > 0:
			n := copy(l.buf, l.buf[l.start:l.end])
			l.start, l.end, l.scanned = 0, n, n
		case l.end == len(l.buf):
			nb := make([]byte, 2*len(l.buf))
			copy(nb, l.buf[:l.end])
			l.buf = nb
		}
		n, err := l.r.Read(l.buf[l.end:])
		l.end += n
		if n == 0 {
			if err == nil {
				err = io.EOF
			}
			return nil, 0, err
		}
	}
}
