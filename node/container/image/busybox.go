package image

import (
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os/exec"
	"strings"
)

// BusyboxPath is where Debian's busybox-static installs a static busybox.
const BusyboxPath = "/bin/busybox"

// DefaultPath is the PATH of images built here.
const DefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// ErrNoStaticBusybox means BusyboxPath is missing or dynamically linked.
var ErrNoStaticBusybox = errors.New("no static busybox at " + BusyboxPath + " (apt-get install busybox-static)")

// fallbackApplets are linked when `busybox --list` cannot run.
var fallbackApplets = []string{
	"[", "awk", "basename", "cat", "chmod", "cp", "cut", "date", "dd", "df", "dirname", "du", "echo", "env",
	"false", "find", "grep", "head", "hostname", "id", "ip", "kill", "ln", "ls", "mkdir", "mount", "mv", "nc",
	"nslookup", "ping", "printf", "ps", "pwd", "readlink", "rm", "sed", "seq", "sh", "sleep", "sort", "stat",
	"tail", "tee", "test", "timeout", "top", "touch", "tr", "true", "uname", "wc", "wget", "which", "whoami",
	"xargs", "yes",
}

// CheckStaticBusybox returns ErrNoStaticBusybox unless BusyboxPath is a
// statically linked ELF executable.
func CheckStaticBusybox() error {
	f, err := elf.Open(BusyboxPath)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNoStaticBusybox, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%w: it is dynamically linked", ErrNoStaticBusybox)
		}
	}
	return nil
}

// BusyboxFiles returns a root filesystem around the host's static busybox:
// /bin/busybox, a /bin symlink for each applet (sh, sleep, cat, echo, wget,
// nslookup, ls, env, id, ...), /usr/bin/env, /etc/passwd and /etc/group
// with root and nobody (65534), and /tmp, /root, /proc, /sys, /dev.
func BusyboxFiles() ([]File, error) {
	if err := CheckStaticBusybox(); err != nil {
		return nil, err
	}
	applets := fallbackApplets
	if out, err := exec.Command(BusyboxPath, "--list").Output(); err == nil {
		applets = strings.Fields(string(out))
	}
	files := []File{
		{Path: "/bin/busybox", Mode: 0o755, SourcePath: BusyboxPath},
		{Path: "/usr/bin/env", Mode: fs.ModeSymlink, Link: "/bin/busybox"},
		{Path: "/etc/passwd", Mode: 0o644, Data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")},
		{Path: "/etc/group", Mode: 0o644, Data: []byte("root:x:0:\nnobody:x:65534:\n")},
		{Path: "/tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
		{Path: "/root", Mode: fs.ModeDir | 0o700},
		{Path: "/proc", Mode: fs.ModeDir | 0o555},
		{Path: "/sys", Mode: fs.ModeDir | 0o555},
		{Path: "/dev", Mode: fs.ModeDir | 0o755},
	}
	for _, a := range applets {
		if a == "busybox" || strings.Contains(a, "/") {
			continue
		}
		files = append(files, File{Path: "/bin/" + a, Mode: fs.ModeSymlink, Link: "busybox"})
	}
	return files, nil
}

// BusyboxConfig is the config of BusyboxImage: PATH set, Cmd ["sh"].
func BusyboxConfig() Config {
	return Config{Cmd: []string{"sh"}, Env: []string{DefaultPath}}
}

// BusyboxImage writes an OCI archive of a busybox image called ref (see
// BusyboxFiles) to w.
func BusyboxImage(w io.Writer, ref string, opts ...Option) (Result, error) {
	files, err := BusyboxFiles()
	if err != nil {
		return Result{}, err
	}
	return BuildArchive(w, ref, files, BusyboxConfig(), opts...)
}
