package localcluster

import (
	"os"
	"runtime/pprof"
	"testing"
)

func TestReadStatThreads(t *testing.T) {
	st, err := readStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// A Go test process runs several threads; the count must match what the
	// runtime created (the threadcreate profile counts every thread made).
	if st.threads < 2 || st.threads > pprof.Lookup("threadcreate").Count() {
		t.Fatalf("num_threads %d (threads created: %d)", st.threads, pprof.Lookup("threadcreate").Count())
	}
	if st.state != 'R' && st.state != 'S' {
		t.Fatalf("state %q for a running test", st.state)
	}
}

func TestStateOf(t *testing.T) {
	for _, c := range []struct {
		st   procStat
		want string
	}{
		{procStat{state: 'S', threads: 9}, ProcRunning},
		{procStat{state: 'D', threads: 1}, ProcRunning},
		{procStat{state: 'T', threads: 9}, ProcStopped},
		{procStat{state: 't', threads: 9}, ProcStopped},
		// kill -9: the main thread is a zombie while the others still exit.
		{procStat{state: 'Z', threads: 7}, ProcRunning},
		{procStat{state: 'Z', threads: 1}, ProcExited},
		{procStat{state: 'Z', threads: 0}, ProcExited},
		{procStat{state: 'X', threads: 1}, ProcExited},
	} {
		if got := stateOf(c.st); got != c.want {
			t.Errorf("stateOf(state %q, %d threads) = %s, want %s", c.st.state, c.st.threads, got, c.want)
		}
	}
}
