package firecracker

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/initramfs"
	"github.com/nixos-fireactions/nixos-fireactions/internal/double/firecrackerdouble"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// The double, built once for the package's tests.
var (
	doubleOnce sync.Once
	double     firecrackerdouble.Binaries
	doubleErr  error
	doubleDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if doubleDir != "" {
		os.RemoveAll(doubleDir)
	}
	os.Exit(code)
}

// buildDouble builds the firecracker and jailer doubles, once.
func buildDouble(t testing.TB) firecrackerdouble.Binaries {
	t.Helper()
	doubleOnce.Do(func() {
		doubleDir, doubleErr = os.MkdirTemp("", "firecrackerdouble")
		if doubleErr == nil {
			// The jailed double runs as an unprivileged user: let it in.
			doubleErr = os.Chmod(doubleDir, 0o755)
		}
		if doubleErr == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			double, doubleErr = firecrackerdouble.Build(ctx, doubleDir)
		}
	})
	if doubleErr != nil {
		t.Fatal(doubleErr)
	}
	return double
}

// hostKernel is the Debian cloud kernel, which QEMU boots for the double.
func hostKernel(t testing.TB) string {
	t.Helper()
	ks, _ := filepath.Glob("/boot/vmlinuz-*-cloud-amd64")
	if len(ks) == 0 {
		t.Fatal("no /boot/vmlinuz-*-cloud-amd64 to boot (make test installs linux-image-cloud-amd64)")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Fatal("no qemu-system-x86_64 for the double to boot with (make deps installs it)")
	}
	return ks[len(ks)-1]
}

// guestInitramfs writes an initramfs whose /init is testdata/guestinit.
func guestInitramfs(t testing.TB, dst string) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "init")
	cmd := exec.Command("go", "build", "-o", bin, "./testdata/guestinit")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the guest init: %v\n%s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	w := initramfs.NewWriter(&buf)
	if err := w.File("init", 0o755, 0, 0, data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// testTAP creates a TAP for the test and removes it after. Like the
// orchestrator's, it is root's: an unprivileged VMM may not attach it
// unless the driver gives it away.
func testTAP(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("fct%d", os.Getpid()%1000000)
	if out, err := exec.Command("ip", "tuntap", "add", "dev", name, "mode", "tap", "user", "0", "group", "0").CombinedOutput(); err != nil {
		t.Fatalf("create tap: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", name).Run() })
	return name
}

// readRecord reads the double's request record.
func readRecord(t testing.TB, path string) []firecrackerdouble.Record {
	t.Helper()
	recs, err := firecrackerdouble.ReadRecord(path)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// assertAllAccepted checks the driver's recorded requests for spec were
// all accepted by the double, in the order Start sends them (with the
// MMDS's or without).
func assertAllAccepted(t testing.TB, recs []firecrackerdouble.Record, spec vmm.Spec, mmds bool) {
	t.Helper()
	var got, want []string
	for _, r := range recs {
		got = append(got, r.Method+" "+r.Path)
		if r.Status/100 != 2 {
			t.Errorf("the double refused the driver's %s %s (%d): %s\nbody: %s", r.Method, r.Path, r.Status, r.Fault, r.Body)
		}
	}
	for _, r := range BootRequests(spec, HostPaths(spec), mmds) {
		want = append(want, "PUT "+r.Path)
	}
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Errorf("requests %v, want %v", got, want)
	}
}

func waitDone(t testing.TB, m vmm.Machine, within time.Duration) {
	t.Helper()
	select {
	case <-m.Done():
	case <-time.After(within):
		t.Fatalf("the VM did not end within %s", within)
	}
}

func processGone(id string) bool { return !runningIDs()[id] }

// killLeftVMMs ends, when the test ends, every VMM of VM id still running:
// a test that fails before its own Kill leaves none behind for the tests
// after it.
func killLeftVMMs(t testing.TB, id string) {
	t.Cleanup(func() {
		procs, _ := filepath.Glob("/proc/[0-9]*")
		for _, p := range procs {
			pid, err := strconv.Atoi(strings.TrimPrefix(p, "/proc/"))
			if err == nil && pid != os.Getpid() && IsOurs(pid, id) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
}
