package hosttest

import (
	"syscall"
	"testing"
	"time"
)

// CPUTime is the test process's user and system CPU time so far: what
// the burst benchmarks divide by the work done.
func CPUTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
