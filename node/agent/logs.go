package agent

import (
	"io"
	"os"
	"strings"
)

// tailLog returns the last lines of a container log (CRI format or raw), at
// most maxLines lines and maxBytes bytes, for a termination message.
func tailLog(path string, maxLines, maxBytes int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(fi.Size()-int64(maxBytes)*4, 0)
	b, err := io.ReadAll(io.NewSectionReader(f, off, fi.Size()-off))
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if off > 0 && len(lines) > 1 {
		lines = lines[1:] // the first one is cut
	}
	for i, l := range lines {
		lines[i] = criContent(l)
	}
	if len(lines) > maxLines {
		lines = lines[len(lines)-maxLines:]
	}
	out := strings.Join(lines, "\n")
	if len(out) > maxBytes {
		out = out[len(out)-maxBytes:]
	}
	return out
}

// criContent strips the CRI log prefix ("<time> <stream> <tag> ") from a
// line; other lines are returned as they are.
func criContent(l string) string {
	parts := strings.SplitN(l, " ", 4)
	if len(parts) == 4 && (parts[1] == "stdout" || parts[1] == "stderr") && (parts[2] == "F" || parts[2] == "P") {
		return parts[3]
	}
	return l
}
