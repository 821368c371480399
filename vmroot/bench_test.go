package vmroot

import (
	"archive/tar"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/imagestore"
	"github.com/nixos-fireactions/nixos-fireactions/initramfs"
	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// BenchmarkPrepareVM measures what the host does per VM of an image pool
// (lease the image, clone the writable disk, attach both, write the VM's
// initramfs) for a 20 MB and a 2 GB image: it must not depend on the
// image's size. The setup, timed apart, is the image's first pull and
// flatten, reported as pull-MB/s (image content per second).
//
//	go test -run '^$' -bench BenchmarkPrepareVM -benchtime 200x ./vmroot
func BenchmarkPrepareVM(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Fatal("needs root: flattening an image sets owners (make test runs as root)")
	}
	for _, size := range []struct {
		name  string
		bytes int64
		gzip  bool
	}{
		{"20MB", 20 << 20, true},
		{"2GB", 2 << 30, false},
	} {
		// Set up here, not in the sub-benchmark, which runs several times
		// and cleans up after each.
		env := setupBench(b, size.bytes, size.gzip)
		b.Run(size.name, func(b *testing.B) {
			times := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				dir := filepath.Join(env.vms, strconv.Itoa(i))
				if err := os.Mkdir(dir, 0o700); err != nil {
					b.Fatal(err)
				}
				t0 := time.Now()
				vm, _, err := env.pools.PrepareVM(b.Context(), "img", dir)
				if err != nil {
					b.Fatal(err)
				}
				spec := vmm.Spec{ID: strconv.Itoa(i)}
				cfg := agentproto.Config{VMID: spec.ID, Runner: agentproto.Runner{Command: []string{"/bin/act_runner"}}}
				vm.Apply(&spec, &cfg)
				if err := initramfs.WriteVM(filepath.Join(dir, "initramfs.cpio"), env.poolArchive, cfg); err != nil {
					b.Fatal(err)
				}
				times = append(times, time.Since(t0))
				b.StopTimer()
				vm.Release()
				os.RemoveAll(dir)
				b.StartTimer()
			}
			sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
			b.ReportMetric(ms(times[len(times)/2]), "median-ms")
			b.ReportMetric(ms(times[len(times)*9/10]), "p90-ms")
			b.ReportMetric(env.pullMBps, "pull-MB/s")
			b.ReportMetric(float64(env.imageBytes)/1e6, "image-MB")
		})
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

type benchEnv struct {
	pools       *Pools
	vms         string
	poolArchive string
	pullMBps    float64
	imageBytes  int64
}

// setupBench pushes an image of size bytes of random files (gzip layers,
// or uncompressed ones for the 2 GB image, so the setup does not spend
// minutes compressing noise), pulls it into a store, and writes a pool
// boot archive of the real agent and the kernel modules an image pool
// loads.
func setupBench(b *testing.B, size int64, gzip bool) *benchEnv {
	b.Helper()
	dir := b.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "registry"), 0o700); err != nil {
		b.Fatal(err)
	}
	host := hosttest.StartRegistry(b, hosttest.Registry(registry.WithBlobHandler(registry.NewDiskBlobHandler(filepath.Join(dir, "registry")))))
	var layers []v1.Layer
	const perLayer = 512 << 20
	for i, left := 0, size; left > 0; i++ {
		n := min(left, perLayer)
		left -= n
		p := filepath.Join(dir, fmt.Sprintf("layer%d.tar", i))
		writeRandomTar(b, p, fmt.Sprintf("data%d", i), n)
		if gzip {
			tb, err := os.ReadFile(p)
			if err != nil {
				b.Fatal(err)
			}
			layers = append(layers, hosttest.Layer(b, tb))
		} else {
			layers = append(layers, hosttest.FileLayer(b, p))
		}
	}
	layers = append(layers, hosttest.Layer(b, tarOf(b, tarFile{"bin/act_runner", 0o755, "#!/bin/sh\n"})))
	hosttest.PushImage(b, host, "bench/image:v1", v1.Config{}, layers...)

	store, err := imagestore.Open(imagestore.Options{Dir: filepath.Join(dir, "images")})
	if err != nil {
		b.Fatal(err)
	}
	disks, err := NewDisks(filepath.Join(dir, "disks"))
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	ps, err := loadPools(b.Context(), store, disks, []config.Pool{imagePool(host + "/bench/image:v1")})
	if err != nil {
		b.Fatal(err)
	}
	took := time.Since(start)
	b.Cleanup(ps.Close)
	im := ps.pools["img"].lease.Image
	env := &benchEnv{pools: ps, vms: filepath.Join(dir, "vms"), imageBytes: im.ContentBytes}
	env.pullMBps = float64(im.ContentBytes) / 1e6 / took.Seconds()
	b.Logf("%s image: first pull, flatten and pack in %s (%.0f MB/s of content), %s image file of %d MB",
		humanMB(size), took.Round(time.Millisecond), env.pullMBps, im.FSType, im.Bytes/1e6)
	if err := os.Mkdir(env.vms, 0o700); err != nil {
		b.Fatal(err)
	}
	env.poolArchive = poolArchive(b, dir)
	return env
}

func humanMB(n int64) string { return strconv.FormatInt(n>>20, 10) + " MiB" }

// poolArchive builds the boot archive an image pool's VMs share: the
// agent and the modules the root needs (when this host has the Debian
// cloud kernel's tree).
func poolArchive(b *testing.B, dir string) string {
	agent := filepath.Join(dir, "fireactions-agent")
	cmd := exec.Command("go", "build", "-trimpath", "-o", agent, "../cmd/fireactions-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build the agent: %v\n%s", err, out)
	}
	var mods []initramfs.Module
	if trees, _ := filepath.Glob("/lib/modules/*-cloud-amd64"); len(trees) > 0 {
		var err error
		mods, err = initramfs.ResolveModules(trees[len(trees)-1], []string{"virtio_mmio", "virtio_net", "virtio_blk", "overlay", "erofs"})
		if err != nil {
			b.Fatal(err)
		}
	}
	p := filepath.Join(dir, "boot.cpio")
	if err := (initramfs.Boot{Agent: agent, Modules: mods}).WritePool(p); err != nil {
		b.Fatal(err)
	}
	fi, _ := os.Stat(p)
	b.Logf("pool boot archive (agent and %d modules): %d KB", len(mods), fi.Size()/1000)
	return p
}

// writeRandomTar writes a tar of files of random bytes (16 MiB each) in
// directory prefix, n bytes of content in all.
func writeRandomTar(b *testing.B, p, prefix string, n int64) {
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	buf := make([]byte, 1<<20)
	for i := 0; n > 0; i++ {
		size := min(n, 16<<20)
		n -= size
		if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("%s/f%04d", prefix, i), Mode: 0o644, Size: size, Typeflag: tar.TypeReg}); err != nil {
			b.Fatal(err)
		}
		for left := size; left > 0; {
			c := min(left, int64(len(buf)))
			rand.Read(buf[:c])
			if _, err := tw.Write(buf[:c]); err != nil {
				b.Fatal(err)
			}
			left -= c
		}
	}
	if err := tw.Close(); err != nil {
		b.Fatal(err)
	}
}
