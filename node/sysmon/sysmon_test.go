package sysmon

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestStartTime(t *testing.T) {
	for _, tc := range []struct {
		line string
		want uint64
		ok   bool
	}{
		{"4242 (shoal) S 1 4242 4242 0 -1 4194624 100 0 0 0 5 3 0 0 20 0 12 0 987654 1000 200", 987654, true},
		{"4242 (a) b) (c) R 1 4242 4242 0 -1 4194624 100 0 0 0 5 3 0 0 20 0 12 0 17 1000 200", 17, true},
		{"4242 (shoal) S 1 2 3", 0, false},
		{"garbage", 0, false},
	} {
		got, err := startTime(tc.line)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("startTime(%q) = %d, %v; want %d, ok=%v", tc.line, got, err, tc.want, tc.ok)
		}
	}
}

// TestThreadIsSysmon checks that Thread finds the monitor: with every
// processor busy running Go code, the monitor is the thread that keeps
// sleeping in nanosleep (usleep between its rounds), while the threads
// running goroutines make no system calls.
func TestThreadIsSysmon(t *testing.T) {
	tid, err := Thread()
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
			}
		})
	}
	defer func() { close(stop); wg.Wait() }()
	time.Sleep(50 * time.Millisecond)
	sleeping, samples := 0, 20
	nanosleep := strconv.Itoa(syscall.SYS_NANOSLEEP)
	for range samples {
		b, err := os.ReadFile("/proc/self/task/" + strconv.Itoa(tid) + "/syscall")
		if err != nil {
			t.Skipf("cannot read the thread's system call: %v", err)
		}
		if f := strings.Fields(string(b)); len(f) > 0 && f[0] == nanosleep {
			sleeping++
		}
		time.Sleep(2 * time.Millisecond)
	}
	if sleeping < samples*3/4 {
		t.Fatalf("thread %d was in nanosleep in %d of %d samples: not the runtime's monitor", tid, sleeping, samples)
	}
}

func TestSetSlack(t *testing.T) {
	if _, err := SetSlack(0); err == nil {
		t.Error("SetSlack(0) succeeded")
	}
	if os.Geteuid() != 0 {
		t.Skip("setting another thread's timer slack needs CAP_SYS_NICE (run as root; CI does)")
	}
	tid, err := SetSlack(time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := slack(tid); err != nil || got != time.Millisecond {
		t.Fatalf("slack of thread %d = %v, %v; want 1ms", tid, got, err)
	}
	// The main thread keeps its own.
	if got, err := slack(os.Getpid()); err != nil || got == time.Millisecond {
		t.Errorf("main thread's slack = %v, %v; want it unchanged", got, err)
	}
}

// slack reads a thread's timer slack.
func slack(tid int) (time.Duration, error) {
	b, err := os.ReadFile(slackPath(tid))
	if err != nil {
		return 0, err
	}
	ns, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return time.Duration(ns), err
}
