package vmroot

import (
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/imagestore"
	"github.com/nixos-fireactions/nixos-fireactions/initramfs"
	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

func TestWritableDisksAreSparseClonesOfAnEmptyExt4(t *testing.T) {
	d, err := NewDisks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	dir := t.TempDir()
	for _, n := range []string{"a.img", "b.img"} {
		p := filepath.Join(dir, n)
		if err := d.Create(ctx, 4096, p); err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		if st.Size != 4096<<20 {
			t.Errorf("%s: %d bytes, want 4 GiB", n, st.Size)
		}
		if alloc := st.Blocks * 512; alloc > 16<<20 {
			t.Errorf("%s: %d bytes allocated for a fresh 4 GiB disk: the clone is not sparse", n, alloc)
		}
		if out, err := exec.Command("e2fsck", "-fn", p).CombinedOutput(); err != nil {
			t.Errorf("%s is not a clean ext4: %v\n%s", n, err, out)
		}
	}
	if err := d.Create(ctx, 4096, filepath.Join(dir, "a.img")); err == nil {
		t.Error("a disk was created over an existing file")
	}
	if err := d.Create(ctx, 16, filepath.Join(dir, "c.img")); err == nil {
		t.Error("a 16 MiB disk was made")
	}
}

func TestRunnerUserComesFromTheImage(t *testing.T) {
	passwd := "root:x:0:0::/root:/bin/sh\nrunner:x:1001:121::/home/runner:/bin/bash\nbuild:x:2000:2000::/b:/bin/sh\nevil:x:0:0::/:/bin/sh\n"
	group := "root:x:0:\ndocker:x:999:runner\n"
	pool := config.RunnerOptions{User: "runner", UID: 1000, GID: 1000}
	tests := []struct {
		imageUser string
		pool      config.RunnerOptions
		want      runnerUser
		err       string
	}{
		{"", pool, runnerUser{"runner", 1001, 121}, ""},
		{"root", pool, runnerUser{"runner", 1001, 121}, ""},
		{"", config.RunnerOptions{User: "ci", UID: 1500, GID: 1500}, runnerUser{"ci", 1500, 1500}, ""},
		{"build", pool, runnerUser{"build", 2000, 2000}, ""},
		{"build:docker", pool, runnerUser{"build", 2000, 999}, ""},
		{"2000:50", pool, runnerUser{"build", 2000, 50}, ""},
		{"4242", pool, runnerUser{"runner", 4242, 4242}, ""},
		{"nobody-here", pool, runnerUser{}, "not in its /etc/passwd"},
		{"evil", pool, runnerUser{}, "run as root"},
		{"build:nogroup", pool, runnerUser{}, "not in its /etc/group"},
	}
	for _, tt := range tests {
		im := &imagestore.Image{Passwd: passwd, Group: group, Config: imagestore.RunConfig{User: tt.imageUser}}
		got, err := resolveUser(im, tt.pool)
		switch {
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("user %q: %v, want an error with %q", tt.imageUser, err, tt.err)
		case tt.err == "" && (err != nil || got != tt.want):
			t.Errorf("user %q (pool %s): %+v, %v; want %+v", tt.imageUser, tt.pool.User, got, err, tt.want)
		}
	}
}

// imagePool is a pool booting image from the test registry.
func imagePool(image string) config.Pool {
	p := config.PoolDefaults()
	p.Name = "img"
	p.VM.Image = image
	p.VM.DiskMiB = 256
	p.Runner.Path = "/bin/act_runner"
	p.Runner.GID = p.Runner.UID
	return p
}

func TestPoolVMsShareTheImageAndGetTheirOwnDisk(t *testing.T) {
	hosttest.RequireRoot(t, flattenNeedsRoot)
	host := hosttest.StartRegistry(t, hosttest.Registry())
	hosttest.PushImage(t, host, "ci/runner:v1", v1.Config{Env: []string{"PATH=/opt/bin:/bin", "LANG=C.UTF-8"}, WorkingDir: "/work"},
		hosttest.Layer(t, tarOf(t,
			tarFile{"etc/passwd", 0o644, "root:x:0:0::/root:/bin/sh\nrunner:x:1001:1001::/home/runner:/bin/sh\n"},
			tarFile{"bin/act_runner", 0o755, "#!/bin/sh\n"})))
	hosttest.PushImage(t, host, "ci/empty:v1", v1.Config{}, hosttest.Layer(t, tarOf(t, tarFile{"etc/os-release", 0o644, "x"})))
	hosttest.PushImage(t, host, "ci/docker:v1", v1.Config{}, hosttest.Layer(t, tarOf(t,
		tarFile{"bin/act_runner", 0o755, "#!/bin/sh\n"}, tarFile{"usr/sbin/dockerd", 0o755, "#!/bin/sh\n"},
		tarFile{"usr/sbin/iptables", 0o755, "#!/bin/sh\n"}, tarFile{"usr/sbin/xtables-legacy-multi", 0o755, "#!/bin/sh\n"})))
	hosttest.PushImage(t, host, "ci/noiptables:v1", v1.Config{}, hosttest.Layer(t, tarOf(t,
		tarFile{"bin/act_runner", 0o755, "#!/bin/sh\n"}, tarFile{"usr/sbin/dockerd", 0o755, "#!/bin/sh\n"})))
	store, err := imagestore.Open(imagestore.Options{Dir: filepath.Join(t.TempDir(), "images")})
	if err != nil {
		t.Fatal(err)
	}
	disks, err := NewDisks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	_, err = loadPools(t.Context(), store, disks, []config.Pool{imagePool(host + "/ci/empty:v1")})
	if err == nil || !strings.Contains(err.Error(), "/bin/act_runner") || !strings.Contains(err.Error(), "runner.path") {
		t.Fatalf("an image without the runner agent: %v, want an error naming it and runner.path", err)
	}

	docker := imagePool(host + "/ci/runner:v1")
	docker.Cache.Docker = true
	_, err = loadPools(t.Context(), store, disks, []config.Pool{docker})
	if err == nil || !strings.Contains(err.Error(), "ci/runner:v1") || !strings.Contains(err.Error(), "has no dockerd") {
		t.Fatalf("Docker asked of an image without dockerd: %v, want an error naming the image and dockerd", err)
	}
	noIPTables := imagePool(host + "/ci/noiptables:v1")
	noIPTables.Cache.Docker = true
	_, err = loadPools(t.Context(), store, disks, []config.Pool{noIPTables})
	if err == nil || !strings.Contains(err.Error(), "ci/noiptables:v1") || !strings.Contains(err.Error(), "has no iptables") {
		t.Fatalf("Docker asked of an image without iptables: %v, want an error naming the image and iptables", err)
	}
	withDockerd := imagePool(host + "/ci/docker:v1")
	withDockerd.Cache.Docker = true
	if ps, err := loadPools(t.Context(), store, disks, []config.Pool{withDockerd}); err != nil {
		t.Fatalf("Docker asked of an image with /usr/sbin/dockerd: %v", err)
	} else {
		// The image's legacy iptables reaches the guest's boot settings.
		vm, _, err := ps.PrepareVM(t.Context(), withDockerd.Name, t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		var spec vmm.Spec
		var cfg agentproto.Config
		vm.Apply(&spec, &cfg)
		if cfg.Root.Netfilter != initramfs.Legacy {
			t.Errorf("netfilter %q, want %q for an image with only xtables-legacy-multi", cfg.Root.Netfilter, initramfs.Legacy)
		}
		vm.Release()
		ps.Close()
	}

	ps, err := loadPools(t.Context(), store, disks, []config.Pool{imagePool(host + "/ci/runner:v1")})
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	if _, ok, err := ps.PrepareVM(t.Context(), "other-pool", t.TempDir()); ok || err != nil {
		t.Fatalf("a pool without an image: ok %v, err %v", ok, err)
	}
	var vms []*VM
	for i := 0; i < 2; i++ {
		dir := t.TempDir()
		vm, ok, err := ps.PrepareVM(t.Context(), "img", dir)
		if err != nil || !ok {
			t.Fatalf("PrepareVM: %v %v", ok, err)
		}
		vms = append(vms, vm)
		g := forge.GuestOptions{User: "runner", UID: 1000, GID: 1000}
		vm.Guest(&g)
		if g.UID != 1001 || g.GID != 1001 {
			t.Errorf("runner user %+v, want the image's runner 1001:1001", g)
		}
		spec := vmm.Spec{}
		cfg := agentproto.Config{Runner: agentproto.Runner{Env: []string{"PATH=/forge/bin"}, WorkDir: "/home/runner"}}
		vm.Apply(&spec, &cfg)
		if len(spec.Drives) != 2 || !spec.Drives[0].ReadOnly || spec.Drives[1].ReadOnly ||
			spec.Drives[1].Path != filepath.Join(dir, "writable.img") || spec.Drives[0].ID != cfg.Root.Image.Serial ||
			spec.Drives[1].ID != cfg.Root.Writable.Serial || cfg.Root.FSType != "erofs" {
			t.Fatalf("drives %+v, root %+v", spec.Drives, cfg.Root)
		}
		if !strings.HasSuffix(cfg.Root.Name, "/ci/runner:v1") {
			t.Errorf("the guest is told the image as %q", cfg.Root.Name)
		}
		if want := []string{"PATH=/opt/bin:/bin", "LANG=C.UTF-8", "PATH=/forge/bin"}; !slices.Equal(cfg.Runner.Env, want) || cfg.Runner.WorkDir != "/work" {
			t.Errorf("runner env %v workdir %s; want %v and /work", cfg.Runner.Env, cfg.Runner.WorkDir, want)
		}
	}
	if vms[0].Digest() != vms[1].Digest() {
		t.Fatal("two VMs of one pool got different images")
	}
	// Leased: neither the pool's image nor the VMs' can be removed.
	if _, err := store.Remove(vms[0].Digest()); err == nil {
		t.Fatal("an image in use was removed")
	}
	for _, vm := range vms {
		vm.Release()
	}
	ps.Close()
	if _, err := store.Remove(vms[0].Digest()); err != nil {
		t.Fatalf("removing the released image: %v", err)
	}
}

// A VM a restart adopts leases the image it boots again, even one no pool
// uses any more (the older digest after its tag moved), before the pools'
// images are loaded: neither the size cap's eviction at the pull nor a
// prune removes it until the VM is gone. An image already gone from the
// store is an error naming it.
func TestAdoptedVMLeasesItsImageUntilReleased(t *testing.T) {
	hosttest.RequireRoot(t, flattenNeedsRoot)
	host := hosttest.StartRegistry(t, hosttest.Registry())
	runner := tarFile{"bin/act_runner", 0o755, "#!/bin/sh\n"}
	hosttest.PushImage(t, host, "ci/runner:v1", v1.Config{}, hosttest.Layer(t, tarOf(t, runner)))
	// Every pull evicts what no one holds: the cap is one byte.
	store, err := imagestore.Open(imagestore.Options{Dir: filepath.Join(t.TempDir(), "images"), MaxBytes: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	old, err := store.Pull(ctx, host+"/ci/runner:v1", imagestore.PullAlways, nil)
	if err != nil {
		t.Fatal(err)
	}
	hosttest.PushImage(t, host, "ci/runner:v1", v1.Config{Env: []string{"MOVED=1"}}, hosttest.Layer(t, tarOf(t, runner)))
	disks, err := NewDisks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	pc := imagePool(host + "/ci/runner:v1")
	pc.VM.PullPolicy = string(imagestore.PullAlways)
	ps, err := New(store, disks, []config.Pool{pc}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	if _, _, err := ps.PrepareVM(ctx, "img", t.TempDir()); err == nil {
		t.Fatal("PrepareVM before Load succeeded")
	}

	missing := "sha256:" + strings.Repeat("0", 64)
	tests := []struct {
		name, digest string
		wantErr      bool
	}{
		{"image in the store", old.Digest, false},
		{"image gone from the store", missing, true},
	}
	var adopted *VM
	for _, tt := range tests {
		dir := t.TempDir()
		vm, err := ps.AdoptVM(ctx, "img", dir, tt.digest)
		if tt.wantErr {
			if err == nil || !errors.Is(err, imagestore.ErrNotPresent) || !strings.Contains(err.Error(), tt.digest) {
				t.Errorf("%s: AdoptVM: %v, want ErrNotPresent naming %s", tt.name, err, tt.digest)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: AdoptVM: %v", tt.name, err)
		}
		if vm.Digest() != tt.digest {
			t.Errorf("%s: adopted root boots %s, want %s", tt.name, vm.Digest(), tt.digest)
		}
		spec := vmm.Spec{}
		vm.Apply(&spec, &agentproto.Config{})
		if len(spec.Drives) != 2 || spec.Drives[1].Path != filepath.Join(dir, "writable.img") {
			t.Errorf("%s: drives %+v, want the writable disk in the VM's directory", tt.name, spec.Drives)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("%s: adoption created %v in the VM's directory", tt.name, entries)
		}
		adopted = vm
	}
	if adopted == nil {
		t.Fatal("no VM adopted")
	}

	// The pools load after adoption: the pull of the moved tag enforces
	// the cap, and a prune follows; the adopted VM's image stays.
	if err := ps.Load(ctx); err != nil {
		t.Fatal(err)
	}
	current := ps.pools["img"].lease.Digest
	if current == old.Digest {
		t.Fatal("the moved tag pulled the old digest")
	}
	if _, err := store.Prune(0, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Get(old.Digest); err != nil {
		t.Fatalf("the adopted VM's image was evicted: %v", err)
	}
	adopted.Release()
	evicted, err := store.Prune(0, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(evicted) != 1 || evicted[0].Digest != old.Digest {
		t.Fatalf("prune after release evicted %v, want only %s", evicted, old.Digest)
	}
	if _, err := store.Get(current); err != nil {
		t.Fatalf("the pool's current image was evicted: %v", err)
	}
}

// A reload gives a pool whose image changed, and a new image pool, their
// image before it returns; a VM started before it keeps its image until
// it is gone, a removed pool's image is let go, a pool whose root did not
// change keeps it without a pull, and a reload that fails changes nothing.
func TestReloadSwitchesImagesAndReleasesRemovedOnes(t *testing.T) {
	hosttest.RequireRoot(t, flattenNeedsRoot)
	host := hosttest.StartRegistry(t, hosttest.Registry())
	runner := tarFile{"bin/act_runner", 0o755, "#!/bin/sh\n"}
	for _, tag := range []string{"v1", "v2", "v3", "v4"} {
		hosttest.PushImage(t, host, "ci/runner:"+tag, v1.Config{Env: []string{"TAG=" + tag}}, hosttest.Layer(t, tarOf(t, runner)))
	}
	hosttest.PushImage(t, host, "ci/empty:v1", v1.Config{}, hosttest.Layer(t, tarOf(t, tarFile{"etc/os-release", 0o644, "x"})))
	store, err := imagestore.Open(imagestore.Options{Dir: filepath.Join(t.TempDir(), "images")})
	if err != nil {
		t.Fatal(err)
	}
	disks, err := NewDisks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	named := func(name, tag string) config.Pool {
		p := imagePool(host + "/ci/runner:" + tag)
		p.Name = name
		return p
	}
	ctx := t.Context()
	ps, err := loadPools(ctx, store, disks, []config.Pool{named("img", "v1"), named("gone", "v3")})
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	digestOf := func(pool string) string {
		t.Helper()
		vm, ok, err := ps.PrepareVM(ctx, pool, t.TempDir())
		if err != nil || !ok {
			t.Fatalf("PrepareVM(%s): %v %v", pool, ok, err)
		}
		defer vm.Release()
		return vm.Digest()
	}
	running, _, err := ps.PrepareVM(ctx, "img", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	v1Digest, v3Digest := running.Digest(), digestOf("gone")

	if err := ps.Reload(ctx, []config.Pool{named("img", "v2"), named("added", "v4")}); err != nil {
		t.Fatal(err)
	}
	v2Digest := digestOf("img")
	if v2Digest == v1Digest {
		t.Fatal("after a reload to v2, the pool's new VMs still boot v1")
	}
	if d := digestOf("added"); d == "" || d == v1Digest || d == v2Digest || d == v3Digest {
		t.Fatalf("the added pool's VMs boot %q, want v4's own digest", d)
	}
	if _, ok, err := ps.PrepareVM(ctx, "gone", t.TempDir()); ok || err != nil {
		t.Fatalf("the removed pool still has a root: ok %v, err %v", ok, err)
	}
	if _, err := store.Remove(v3Digest); err != nil {
		t.Fatalf("the removed pool's image is still leased: %v", err)
	}
	if _, err := store.Remove(v1Digest); err == nil {
		t.Fatal("the image of a VM started before the reload was removed while it runs")
	}
	running.Release()
	if _, err := store.Remove(v1Digest); err != nil {
		t.Fatalf("v1 after its last VM is gone: %v", err)
	}

	ps.mu.Lock()
	kept := ps.pools["img"]
	ps.mu.Unlock()
	relabelled := named("img", "v2")
	relabelled.Labels = []string{"other"}
	if err := ps.Reload(ctx, []config.Pool{relabelled, named("added", "v4")}); err != nil {
		t.Fatal(err)
	}
	ps.mu.Lock()
	same := ps.pools["img"] == kept
	ps.mu.Unlock()
	if !same {
		t.Error("a reload that changed only the labels replaced the pool's root")
	}
	// A reload that turns Docker on checks the image for it: v2 has no
	// dockerd, so the reload is refused and the pool keeps its root.
	docker := named("img", "v2")
	docker.Cache.Docker = true
	if err := ps.Reload(ctx, []config.Pool{docker, named("added", "v4")}); err == nil || !strings.Contains(err.Error(), "has no dockerd") {
		t.Errorf("a reload that asks for Docker of an image without dockerd: %v", err)
	}

	broken := imagePool(host + "/ci/empty:v1")
	if err := ps.Reload(ctx, []config.Pool{broken}); err == nil || !strings.Contains(err.Error(), "runner.path") {
		t.Fatalf("a reload to an image without the runner agent: %v, want an error", err)
	}
	if d := digestOf("img"); d != v2Digest {
		t.Fatalf("a failed reload changed the pool's image to %s", d)
	}
	if d := digestOf("added"); d == "" {
		t.Fatal("a failed reload removed a pool's root")
	}
}
