package logfile

import (
	"bytes"
	"io"
)

// pos is a place in a log: a file, numbered from 0 for the oldest file
// Read opened and on for those it follows into, and an offset in it.
type pos struct {
	file int
	off  int64
}

func (p pos) before(q pos) bool { return p.file < q.file || (p.file == q.file && p.off < q.off) }

// tailPlan says where the last lines of a log begin: reading starts at
// start, and a record of stream k before skip[k] is not shown.
type tailPlan struct {
	start pos
	skip  [2]pos
}

// tailExtend bounds how far before the tail planTail looks for the start
// of an unfinished line of the other stream.
const tailExtend = 4 << 20

// planTail finds where the last n lines of stream s ("" for both) begin,
// reading the files backwards from their ends, a block at a time.
//
// A line ends with an F record, or with the last P record of its stream (a
// line still unfinished). Reading starts just past the end of the line
// before the last n, unless a line of the other stream in the tail began
// earlier with P chunks (the streams' records interleave): then it starts
// where that line does, and skips the first stream's records up to the
// end of its line before the tail.
func planTail(files []*logFile, n int64, s Stream) (tailPlan, error) {
	var (
		plan   tailPlan // the zero plan shows everything
		count  int64
		seen   [2]bool // a record of the stream was counted: P records before it do not end a line
		phase  = 1     // 1: count lines; 2: find where the other stream's line starts; 3: done
		end    pos     // just past the line before the tail
		other  int
		chain  bool // phase 2 found a P record of other: looking for the F before it
		budget = int64(tailExtend)
	)
	for i := len(files) - 1; i >= 0 && phase != 3; i-- {
		fi, err := files[i].f.Stat()
		if err != nil {
			return plan, err
		}
		err = scanBackward(files[i].f, fi.Size(), func(line []byte, at int64) bool {
			if phase == 2 {
				if budget -= int64(len(line)) + 1; budget < 0 {
					plan, phase = tailPlan{start: end}, 3 // too far: show that line cut
					return false
				}
			}
			rec, ok := parseRecord(line)
			if !ok || (s != "" && rec.stream != s) {
				return true
			}
			k := rec.stream.index()
			past := pos{i, at + int64(len(line)) + 1}
			if phase == 1 {
				if !rec.partial || !seen[k] {
					count++
				}
				seen[k] = true
				if count <= n {
					return true
				}
				end, other = past, 1-k
				plan.start = end
				if s != "" || !seen[other] {
					phase = 3 // the other stream has no line in the tail
					return false
				}
				plan.skip[k] = end
				phase = 2
				return true
			}
			switch {
			case k != other:
			case !chain && !rec.partial:
				plan, phase = tailPlan{start: end}, 3 // other's tail lines all start after end
				return false
			case !chain:
				chain = true // its line goes on after end: find its start
			case !rec.partial:
				plan.start, phase = past, 3
				return false
			}
			return true
		})
		if err != nil {
			return plan, err
		}
	}
	if phase == 2 && !chain {
		plan = tailPlan{start: end}
	}
	return plan, nil
}

// scanBackward calls fn for each line of the first size bytes of f, last
// first, with the line's offset, until fn returns false. Bytes after the
// last newline (a record being written) are not a line; lines longer than
// maxRecord are skipped.
func scanBackward(f io.ReaderAt, size int64, fn func(line []byte, at int64) bool) error {
	const block = 64 << 10
	var (
		pos     = size
		chunk   = make([]byte, block)
		buf     []byte // the bytes from pos on not yet passed to fn; ends with a newline unless seekEnd
		seekEnd = true // looking for the newline that ends the next line
	)
	for pos > 0 {
		n := int64(block)
		if pos < n {
			n = pos
		}
		pos -= n
		c := chunk[:n]
		if _, err := f.ReadAt(c, pos); err != nil && err != io.EOF {
			return err
		}
		if seekEnd {
			j := bytes.LastIndexByte(c, '\n')
			if j < 0 {
				continue
			}
			c, buf, seekEnd = c[:j+1], buf[:0], false
		}
		buf = append(append(make([]byte, 0, len(c)+len(buf)), c...), buf...)
		for len(buf) > 0 {
			k := bytes.LastIndexByte(buf[:len(buf)-1], '\n')
			if k < 0 {
				break // this line starts before pos
			}
			if !fn(buf[k+1:len(buf)-1], pos+int64(k)+1) {
				return nil
			}
			buf = buf[:k+1]
		}
		if len(buf) > maxRecord {
			buf, seekEnd = nil, true
		}
	}
	if len(buf) > 0 {
		fn(buf[:len(buf)-1], 0)
	}
	return nil
}
