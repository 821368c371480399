package firecracker

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/internal/double/firecrackerdouble"
	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// Per-VM VMM set-up cost on the host: from nothing to InstanceStart
// answered, against the firecracker double with no guest booted
// (FCDOUBLE_BOOT=none), so QEMU's start is excluded. Run with
//
//	go test -run '^$' -bench . -benchtime 200x ./vmm/firecracker/
//
// (as root: the double checks the TAP exists; the jailer chowns).

func benchSpec(b *testing.B, id string) vmm.Spec {
	dir := b.TempDir()
	s := testSpec
	s.ID, s.Dir, s.ConsoleLog = id, dir, filepath.Join(dir, "console.log")
	s.Kernel, s.Initramfs = filepath.Join(dir, "kernel"), filepath.Join(dir, "initramfs")
	os.WriteFile(s.Kernel, make([]byte, 8<<20), 0o644)
	os.WriteFile(s.Initramfs, make([]byte, 4<<20), 0o600)
	return s
}

func benchStart(b *testing.B, d *Driver, spec vmm.Spec) {
	ctx := context.Background()
	for b.Loop() {
		m, err := d.Start(ctx, spec)
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		kctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := m.Kill(kctx); err != nil {
			b.Fatal(err)
		}
		cancel()
		b.StartTimer()
	}
}

// BenchmarkStart: the firecracker process (the double: a Go binary where
// Firecracker is a static Rust one), its API socket, four PUTs.
func BenchmarkStart(b *testing.B) {
	hosttest.RequireRoot(b, "a TAP")
	bin := buildDouble(b)
	b.Setenv("FCDOUBLE_BOOT", "none")
	spec := benchSpec(b, "bench1")
	spec.TAP = testTAP(b)
	benchStart(b, &Driver{Binary: bin.Firecracker}, spec)
}

// BenchmarkStartJailed adds the jail: chroot directories, hard links, the
// jailer double's process (cgroup files, mknod, chown, exec), and the
// jail's removal is outside the timer (it follows Kill).
func BenchmarkStartJailed(b *testing.B) {
	hosttest.RequireRoot(b, "the jailer chowns and mknods; a TAP")
	bin := buildDouble(b)
	b.Setenv("FCDOUBLE_BOOT", "none")
	base, err := os.MkdirTemp("", "fcjail")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(base)
	os.Chmod(base, 0o711)
	cg := filepath.Join(base, "cgroup")
	os.MkdirAll(cg, 0o755)
	os.WriteFile(filepath.Join(cg, "cgroup.controllers"), []byte("cpu memory\n"), 0o644)
	mounts := filepath.Join(base, "mounts")
	os.WriteFile(mounts, []byte("cgroup2 "+cg+" cgroup2 rw 0 0\n"), 0o644)
	b.Setenv("FCDOUBLE_PROC_MOUNTS", mounts)
	spec := benchSpec(b, "bench2")
	spec.TAP = testTAP(b)
	d := &Driver{Binary: bin.Firecracker, Jailer: &Jailer{
		Binary: bin.Jailer, ChrootBaseDir: base, UID: jailUID, GID: jailGID,
		ParentCgroup: "fireactions", MemoryOverheadMiB: 64, MountTable: mounts,
	}}
	benchStart(b, d, spec)
}

// BenchmarkProcessStart is the floor under BenchmarkStart on this host:
// starting and reaping the double's binary when it exits at once (an
// unknown argument, before it reads the API description).
func BenchmarkProcessStart(b *testing.B) {
	bin := buildDouble(b)
	for b.Loop() {
		if err := exec.Command(bin.Firecracker, "--no-such-argument").Run(); err == nil {
			b.Fatal("an unknown argument was accepted")
		}
	}
}

// BenchmarkAPICalls is the API part alone: the four PUTs over a unix
// socket to an in-process double, which validates each against the API
// description (so this is an upper bound for the client's share).
func BenchmarkAPICalls(b *testing.B) {
	s := firecrackerdouble.LoadSpec(b)
	dir := b.TempDir()
	kernel, initrd := filepath.Join(dir, "kernel"), filepath.Join(dir, "initramfs")
	os.WriteFile(kernel, []byte("k"), 0o644)
	os.WriteFile(initrd, []byte("i"), 0o644)
	var srv *firecrackerdouble.Server
	sock := filepath.Join(dir, "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		b.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { srv.ServeHTTP(w, r) })}
	go hs.Serve(ln)
	defer hs.Close()
	ctx := context.Background()
	for b.Loop() {
		srv = firecrackerdouble.NewServer(firecrackerdouble.Options{Spec: s, ID: "bench", OpenTAP: func(string) error { return nil }})
		c := NewClient(sock, 0)
		for _, r := range BootRequests(testSpec, Paths{Kernel: kernel, Initrd: initrd}, false) {
			if err := r.Send(ctx, c); err != nil {
				b.Fatal(err)
			}
		}
		c.Close()
	}
}
