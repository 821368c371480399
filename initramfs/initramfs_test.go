package initramfs

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/json"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
)

// rootArchive returns a user root archive: an uncompressed newc archive,
// optionally gzipped.
func rootArchive(t *testing.T, gz bool) []byte {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	w.MkdirAll("/bin", 0o755, 0, 0)
	w.File("/bin/busybox", 0o755, 0, 0, []byte("busybox"))
	w.Symlink("/bin/sh", "busybox", 0, 0)
	w.Symlink("/init", "/bin/sh", 0, 0) // the agent must replace it
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if !gz {
		return buf.Bytes()
	}
	// A compressed length that is not a multiple of 4, as real ones often
	// are, so that the pool's padding is exercised.
	var z bytes.Buffer
	for n := 0; ; n++ {
		z.Reset()
		zw := gzip.NewWriter(&z)
		zw.Header.Name = string(bytes.Repeat([]byte("n"), n))
		zw.Write(buf.Bytes())
		zw.Close()
		if z.Len()%4 != 0 {
			return z.Bytes()
		}
	}
}

type poolFixture struct {
	dir, pool string
	root      []byte
	agent     []byte
	mods      []Module
}

func writeTestPool(t testing.TB, root []byte, agentSize int) poolFixture {
	dir := t.TempDir()
	f := poolFixture{dir: dir, root: root, agent: make([]byte, agentSize)}
	rand.Read(f.agent)
	must(t, os.WriteFile(filepath.Join(dir, "root.cpio"), root, 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "agent"), f.agent, 0o755))
	for i, n := range []string{"virtio", "virtio_net"} {
		p := filepath.Join(dir, n+".ko")
		must(t, os.WriteFile(p, []byte("module "+n), 0o644))
		f.mods = append(f.mods, Module{Name: n, HostPath: p, GuestPath: path.Join(ModulesDir, []string{"01-", "02-"}[i]+n+".ko")})
	}
	f.pool = filepath.Join(dir, "pool.img")
	b := Boot{RootArchive: filepath.Join(dir, "root.cpio"), Agent: filepath.Join(dir, "agent"), Modules: f.mods}
	must(t, b.WritePool(f.pool))
	return f
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestWritePool(t *testing.T) {
	for _, gz := range []bool{false, true} {
		f := writeTestPool(t, rootArchive(t, gz), 100_003)
		pool, err := os.ReadFile(f.pool)
		must(t, err)
		if !bytes.HasPrefix(pool, f.root) {
			t.Fatalf("gzip root %v: pool does not start with the root archive's bytes", gz)
		}
		if len(pool)%4 != 0 {
			t.Errorf("gzip root %v: pool is %d bytes, not a multiple of 4", gz, len(pool))
		}
		if pool[len(f.root)] != 0x1f || pool[len(f.root)+1] != 0x8b {
			t.Errorf("gzip root %v: overlay is not gzip", gz)
		}
		archives, err := unpackInitrd(pool)
		if err != nil {
			t.Fatalf("gzip root %v: %v", gz, err)
		}
		if len(archives) != 2 {
			t.Fatalf("gzip root %v: %d archives", gz, len(archives))
		}
		overlay := archives[1]
		assertParentsFirst(t, overlay)
		got := byName(overlay)
		for name, mode := range map[string]uint32{
			"init": 0o100755, "etc": 0o040755, "etc/fireactions": 0o040700, "etc/fireactions/modules": 0o040700,
			"etc/fireactions/modules/01-virtio.ko": 0o100644, "etc/fireactions/modules/02-virtio_net.ko": 0o100644,
			"proc": 0o040555, "sys": 0o040555, "dev": 0o040755, "dev/console": 0o020600, "tmp": 0o041777,
			"run": 0o040755, "root": 0o040700, "home": 0o040755,
		} {
			e, ok := got[name]
			if !ok {
				t.Errorf("overlay lacks %s", name)
				continue
			}
			if e.mode != mode || e.uid != 0 || e.gid != 0 || e.mtime != 0 {
				t.Errorf("%s: mode %o uid %d gid %d mtime %d, want mode %o root", name, e.mode, e.uid, e.gid, e.mtime, mode)
			}
		}
		if len(got) != 14 {
			t.Errorf("overlay has %d entries: %v", len(got), got)
		}
		if !bytes.Equal(got["init"].data, f.agent) {
			t.Error("/init is not the agent")
		}
		if string(got["etc/fireactions/modules/02-virtio_net.ko"].data) != "module virtio_net" {
			t.Error("module content")
		}
		// The agent's /init comes after the root archive's: it wins.
		if byName(archives[0])["init"].mode&0o170000 != modeSymlink {
			t.Error("test root archive has no /init symlink to replace")
		}
		if fi, _ := os.Stat(f.pool); fi.Mode().Perm() != 0o644 {
			t.Errorf("pool mode %v", fi.Mode())
		}
	}
}

// assertParentsFirst checks that every entry's parent directory is in the
// same archive, earlier.
func assertParentsFirst(t *testing.T, es []entry) {
	t.Helper()
	seen := map[string]bool{}
	for _, e := range es {
		if p := path.Dir(e.name); p != "." && !seen[p] {
			t.Errorf("%s comes before its parent %s", e.name, p)
		}
		if e.mode&0o170000 == modeDir {
			seen[e.name] = true
		}
	}
}

func TestWriteVM(t *testing.T) {
	f := writeTestPool(t, rootArchive(t, true), 1000)
	cfg := agentproto.Config{
		VMID: "vm-7", Hostname: "h", Modules: GuestPaths(f.mods),
		Network: agentproto.Network{Interface: "eth0", Address: "10.0.0.2/24", Gateway: "10.0.0.1"},
		Report:  agentproto.Reporter{URL: "http://10.0.0.1:8080", Token: "t"},
		Runner: agentproto.Runner{User: "runner", UID: 1000, GID: 1000, Command: []string{"act_runner", "daemon"},
			Files: []agentproto.File{{Path: "/home/runner/.runner", Mode: 0o600, Content: []byte("secret")}}},
	}
	dst := filepath.Join(f.dir, "vms", "vm-7.initrd")
	must(t, os.MkdirAll(filepath.Dir(dst), 0o755))
	must(t, os.WriteFile(dst, []byte("stale"), 0o644)) // replaced
	must(t, WriteVM(dst, f.pool, cfg))

	fi, err := os.Stat(dst)
	must(t, err)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("VM initramfs mode %v, want 0600", fi.Mode())
	}
	vm, _ := os.ReadFile(dst)
	pool, _ := os.ReadFile(f.pool)
	if !bytes.HasPrefix(vm, pool) {
		t.Fatal("VM initramfs does not start with the pool archive")
	}
	// The tail is exactly one uncompressed archive holding only the config.
	es, n, err := parseNewc(vm[len(pool):])
	if err != nil {
		t.Fatal(err)
	}
	if len(pool)+n != len(vm) {
		t.Errorf("%d bytes after the config archive", len(vm)-len(pool)-n)
	}
	if len(es) != 1 || es[0].name != "etc/fireactions/agent.json" || es[0].mode != 0o100600 || es[0].uid != 0 || es[0].gid != 0 {
		t.Fatalf("config archive %+v", es)
	}
	var got agentproto.Config
	must(t, json.Unmarshal(es[0].data, &got))
	if !reflect.DeepEqual(got, cfg) {
		t.Errorf("config %+v, want %+v", got, cfg)
	}
	archives, err := unpackInitrd(vm)
	if err != nil || len(archives) != 3 {
		t.Fatalf("unpacking the VM initramfs: %d archives, %v", len(archives), err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(dst), ".*")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestWriteVMAlignsAfterAnyPool(t *testing.T) {
	// A pool not from WritePool (a bare gzip root, odd length) still gets
	// its config archive at an aligned offset.
	dir := t.TempDir()
	pool := filepath.Join(dir, "pool")
	root := rootArchive(t, true)
	must(t, os.WriteFile(pool, root, 0o644))
	dst := filepath.Join(dir, "vm")
	must(t, WriteVM(dst, pool, agentproto.Config{VMID: "x"}))
	vm, _ := os.ReadFile(dst)
	archives, err := unpackInitrd(vm)
	if err != nil || len(archives) != 2 || archives[1][0].name != "etc/fireactions/agent.json" {
		t.Fatalf("%v %v", archives, err)
	}
}

func TestWriteVMFailureLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(dir, "vm")
	if err := WriteVM(dst, filepath.Join(dir, "missing"), agentproto.Config{}); err == nil {
		t.Fatal("no error for a missing pool archive")
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
}

// BenchmarkWriteVM measures one VM's initramfs from a 20 MB pool archive.
func BenchmarkWriteVM(b *testing.B) {
	dir := b.TempDir()
	pool := filepath.Join(dir, "pool")
	data := make([]byte, 20<<20)
	rand.Read(data)
	must(b, os.WriteFile(pool, data, 0o644))
	cfg := agentproto.Config{VMID: "vm", Runner: agentproto.Runner{Files: []agentproto.File{{Path: "/x", Content: make([]byte, 4096)}}}}
	dst := filepath.Join(dir, "vm.initrd")
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		if err := WriteVM(dst, pool, cfg); err != nil {
			b.Fatal(err)
		}
	}
}
