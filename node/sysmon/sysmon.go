// Package sysmon lets the Go runtime's system monitor sleep in coarser steps.
//
// The runtime's monitor thread (sysmon) takes processors back from threads
// blocked in system calls and preempts long-running goroutines. It sleeps
// 20 µs between rounds for as long as it keeps finding work, and a process
// that wakes from idle restarts that 20 µs cadence. A raft follower does
// that hundreds of times a second (once per replicated entry), and so does
// a busy leader: at 100 writing clients on this project's two-core test
// machine, sysmon's sleeps were 44% of a follower's context switches and
// 13% of its CPU samples, most of it the cost of switching in and out.
// The kernel lets a thread's timers fire up to its timer slack late (50 µs
// by default); a larger slack on sysmon's thread alone lets the kernel
// batch its wake-ups with other timers and coarsens its cadence, while
// every other thread keeps its timers exact.
//
// The cost: sysmon notices a processor held by a blocking system call (an
// fsync, say) up to the slack later, so other goroutines wait that much
// longer for it when every other processor is busy.
package sysmon

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
)

// Thread returns the thread ID of the runtime's monitor. runtime.main
// starts it before any package is initialised, so it is the first thread
// the process created after its main thread: the earliest start time, and
// of those the lowest ID.
func Thread() (int, error) {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return 0, err
	}
	pid := os.Getpid()
	best, bestStart := 0, uint64(math.MaxUint64)
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil || tid == pid {
			continue
		}
		b, err := os.ReadFile("/proc/self/task/" + e.Name() + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		start, err := startTime(string(b))
		if err != nil {
			return 0, fmt.Errorf("thread %d: %w", tid, err)
		}
		if start < bestStart || start == bestStart && tid < best {
			best, bestStart = tid, start
		}
	}
	if best == 0 {
		return 0, errors.New("the runtime has no thread besides the main one")
	}
	return best, nil
}

// startTime returns field 22 (starttime) of a /proc stat line.
func startTime(stat string) (uint64, error) {
	// The command name (field 2) is in parentheses and may hold spaces
	// and parentheses itself; the fields after it follow the last ')'.
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("malformed stat line")
	}
	f := strings.Fields(stat[i+1:])
	const starttime = 22 - 3 // fields after ')' start at field 3
	if len(f) <= starttime {
		return 0, errors.New("short stat line")
	}
	return strconv.ParseUint(f[starttime], 10, 64)
}

// SetSlack sets the timer slack of the runtime's monitor thread and returns
// its thread ID. Setting another thread's slack needs CAP_SYS_NICE.
func SetSlack(d time.Duration) (int, error) {
	if d <= 0 {
		return 0, fmt.Errorf("timer slack %v: must be positive", d)
	}
	tid, err := Thread()
	if err != nil {
		return 0, err
	}
	// /proc/TID is the thread's own entry; its timer slack is per thread.
	return tid, os.WriteFile(slackPath(tid), []byte(strconv.FormatInt(d.Nanoseconds(), 10)), 0)
}

func slackPath(tid int) string { return "/proc/" + strconv.Itoa(tid) + "/timerslack_ns" }
