package qemu

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// fakeTSC is a host whose clock advances step at each reading and whose
// counter runs at khz; widen makes the clock readings it says late by a
// millisecond (a preemption between the counter's read and the clock's).
type fakeTSC struct {
	ns, step int64
	khz      int64
	reads    int
	widen    func(reading int) bool
}

func (f *fakeTSC) now() time.Time {
	f.reads++
	f.ns += f.step
	if f.widen != nil && f.widen(f.reads) {
		f.ns += int64(time.Millisecond)
	}
	return time.Unix(0, f.ns)
}

func (f *fakeTSC) read() (uint64, bool) { return uint64(f.ns * f.khz / 1e6), true }

func TestTheTSCRateIsMeasuredAgainstTheMonotonicClock(t *testing.T) {
	f := &fakeTSC{step: 10_000, khz: 2_096_013}
	got, err := measureTSCkHz(f.read, f.now, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got < 2_095_900 || got > 2_096_100 {
		t.Errorf("measured %d kHz, want 2096013", got)
	}
}

func TestACounterReadAPreemptionDelayedIsReadAgain(t *testing.T) {
	// Every other sample's second clock reading comes 1 ms late: taken as
	// it is, that sample's middle would be 0.5 ms off, and the rate too.
	f := &fakeTSC{step: 10_000, khz: 2_096_013, widen: func(n int) bool { return n%4 == 2 }}
	got, err := measureTSCkHz(f.read, f.now, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got < 2_095_900 || got > 2_096_100 {
		t.Errorf("measured %d kHz, want 2096013 (the widened read was used)", got)
	}
}

func TestAHostWithoutATSCIsAnError(t *testing.T) {
	if _, err := measureTSCkHz(func() (uint64, bool) { return 0, false }, time.Now, 0); err == nil {
		t.Fatal("no error without a counter")
	}
}

func TestATCGGuestIsToldItsTSCRate(t *testing.T) {
	d := &Driver{Accel: AccelTCG, TSCkHz: 2_096_013}
	if got, want := d.AccelCmdline(), "tsc_early_khz=2096013 lpj=8384052"; got != want {
		t.Errorf("TCG command line %q, want %q", got, want)
	}
	if got, want := (&Driver{Accel: AccelTCG}).AccelCmdline(), "tsc_early_khz=2600000 lpj=10400000"; got != want {
		t.Errorf("TCG command line without a rate %q, want %q", got, want)
	}
}

func TestTheHostsTSCRateIsRoundedToAMHz(t *testing.T) {
	khz, err := HostTSCkHz()
	if runtime.GOARCH != "amd64" {
		if err == nil {
			t.Errorf("a %s host measured a TSC of %d kHz", runtime.GOARCH, khz)
		}
		return
	}
	if err != nil {
		t.Fatalf("amd64 hosts have a TSC: %v", err)
	}
	if khz%1000 != 0 || khz < 100_000 {
		t.Errorf("host TSC rate %d kHz: not a whole MHz, or implausible", khz)
	}
}

// TestAGuestsClockKeepsTheHostsPace: a TCG guest sleeps 6 s by its own
// clock; the host sees that sleep take 6 s (within 10%). Its kernel
// reads the TSC, which is the host's, at the rate the command line gives:
// a wrong rate makes every guest second a wrong length (a 2.6 GHz hint
// on a 2.1 GHz host: 7.4 s).
func TestAGuestsClockKeepsTheHostsPace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root: the guest's TAP (make test runs as root)")
	}
	const sleep = 6 * time.Second
	dir := t.TempDir()
	s := vmm.Spec{
		ID: fmt.Sprintf("qclock%d", os.Getpid()), Dir: dir, Kernel: hostKernel(t),
		Initramfs: filepath.Join(dir, "initramfs.cpio"), VCPUs: 1, MemoryMiB: 256,
		TAP: tap(t, "c"), MAC: "02:00:00:00:00:05", ConsoleLog: filepath.Join(dir, "console.log"),
		Cmdline: fmt.Sprintf("guestinit=reset guestsleep=%d", int(sleep.Seconds())),
	}
	guestInitramfs(t, s.Initramfs)
	khz, err := HostTSCkHz()
	if err != nil {
		t.Fatal(err)
	}
	d := &Driver{Binary: "qemu-system-x86_64", Accel: AccelTCG, TSCkHz: khz}
	m, err := d.Start(context.Background(), s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Kill(context.Background()) })
	seen := func(line string) time.Time {
		t.Helper()
		for deadline := time.Now().Add(2 * time.Minute); !strings.Contains(readConsole(s.ConsoleLog), line); time.Sleep(2 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q on the console within 2 minutes; console:\n%s", line, readConsole(s.ConsoleLog))
			}
		}
		return time.Now()
	}
	up := seen("guestinit: up")
	slept := seen("guestinit: slept")
	took := slept.Sub(up)
	t.Logf("FIGURE a %v sleep by a TCG guest's clock took %v by the host's (%s)", sleep, took.Round(time.Millisecond), d.AccelCmdline())
	if took < sleep*9/10 || took > sleep*11/10 {
		t.Errorf("a %v sleep by the guest's clock took %v by the host's: the guest's clock runs at %.2f of the host's", sleep, took, float64(sleep)/float64(took))
	}
}
