package qemu

import (
	"fmt"
	"slices"
	"time"
)

// A TCG guest's TSC is the host's: QEMU's emulated RDTSC returns the
// host counter (offset, not scaled). The guest kernel is told that rate
// (tsc_early_khz) instead of calibrating against an emulated timer,
// which hangs ~4% of TCG boots; told a wrong rate, its clock runs at
// the ratio (a 2.1 GHz host under a 2.6 GHz hint: 0.81 s per second),
// and so do its sleeps, timeouts and job durations, as microvm has no
// HPET or ACPI PM timer to refine the rate against.

// fallbackTSCkHz is the rate assumed when none is given (the driver's
// TSCkHz: the daemon measures the host's).
const fallbackTSCkHz = 2600000

// kernelHZ is the timer frequency the lpj hint assumes (Debian's and
// NixOS' x86 kernels: 250); lpj is TSC cycles per jiffy, which udelay
// counts with a TSC delay loop.
const kernelHZ = 250

// HostTSCkHz measures the host's TSC rate, what a TCG guest's TSC runs
// at, rounded to a MHz: a template (its kernel was told the rate) is
// keyed by it, and a restart's measurement must not differ by noise.
// It takes ~60 ms.
func HostTSCkHz() (int, error) {
	khz, err := measureTSCkHz(readTSC, time.Now, 20*time.Millisecond)
	if err != nil {
		return 0, err
	}
	return (khz + 500) / 1000 * 1000, nil
}

// measureTSCkHz times the counter against the monotonic clock over
// window, three times, and returns the median rate. Each end is a
// counter read bracketed by two clock reads less than 50 µs apart (one
// whose bracket a preemption widened is read again), and the counter is
// taken at the bracket's middle.
func measureTSCkHz(read func() (uint64, bool), now func() time.Time, window time.Duration) (int, error) {
	if _, ok := read(); !ok {
		return 0, fmt.Errorf("qemu: no time-stamp counter on this host")
	}
	sample := func() (uint64, time.Time, error) {
		for range 100 {
			t0 := now()
			c, _ := read()
			t1 := now()
			if d := t1.Sub(t0); d >= 0 && d < 50*time.Microsecond {
				return c, t0.Add(d / 2), nil
			}
		}
		return 0, time.Time{}, fmt.Errorf("qemu: measuring the TSC: no counter read within 50 µs of the clock's in 100 tries")
	}
	var rates []int
	for range 3 {
		c0, t0, err := sample()
		if err != nil {
			return 0, err
		}
		time.Sleep(window)
		c1, t1, err := sample()
		if err != nil {
			return 0, err
		}
		ns := t1.Sub(t0).Nanoseconds()
		if ns <= 0 || c1 <= c0 {
			return 0, fmt.Errorf("qemu: measuring the TSC: counter %d→%d over %dns", c0, c1, ns)
		}
		rates = append(rates, int((c1-c0)*1e6/uint64(ns)))
	}
	slices.Sort(rates)
	return rates[1], nil
}

// tcgCmdline is the kernel command line's timing hints for a guest whose
// TSC runs at khz: its rate, and its delay loop's cycles per jiffy.
func tcgCmdline(khz int) string {
	return fmt.Sprintf("tsc_early_khz=%d lpj=%d", khz, khz*(1000/kernelHZ))
}
