//go:build e2e && buildah

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/nixos-fireactions/nixos-fireactions/imagestore"
	"github.com/nixos-fireactions/nixos-fireactions/initramfs"
	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
	"github.com/nixos-fireactions/nixos-fireactions/vmroot"
)

// images/docker/Dockerfile.gitea builds for real, with buildah, from
// images/debian/build.sh's bookworm root pushed to a loopback registry as
// its BASE and GO_IMAGE (neither Docker Hub nor the golang image is
// reachable here): the Gitea runner is built in the Go stage with the
// host's Go toolchain and module cache mounted and the host's GOPROXY (the
// module proxy is reachable), the final stage runs apt (so is Debian's
// mirror). The result, pushed back
// and pulled through the image store, has the runner at the pool's
// default path and dockerd with iptables-nft, and its runner runs. It
// boots nothing.
//
// Behind its own tag (go test -tags 'e2e buildah' -run
// TestGiteaDockerfileBuildsWithBuildah ./e2e): it takes minutes (4 with
// the host's Go build cache warm, 16 cold, on two loaded cores), too
// long for the e2e suite's budget; it needs Debian's mirror and the Go
// module proxy.
func TestGiteaDockerfileBuildsWithBuildah(t *testing.T) {
	hosttest.RequireRoot(t, "buildah and the image store's flattening need root")
	buildah, err := exec.LookPath("buildah")
	if err != nil {
		t.Fatal("no buildah (scripts/install-deps.sh installs it)")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Minute)
	defer cancel()

	var buildLog strings.Builder
	build := exec.CommandContext(ctx, "../images/debian/build.sh", cacheDir())
	build.Stderr = &buildLog
	out, err := build.Output()
	if err != nil {
		t.Fatalf("images/debian/build.sh: %v\n%s%s", err, out, buildLog.String())
	}
	rootTar := strings.TrimSpace(string(out))

	tmp := t.TempDir()
	blobs := filepath.Join(tmp, "blobs") // on disk: the base is ~550 MB
	if err := os.Mkdir(blobs, 0o700); err != nil {
		t.Fatal(err)
	}
	host := hosttest.StartRegistry(t, hosttest.Registry(registry.WithBlobHandler(registry.NewDiskBlobHandler(blobs))))
	base := host + "/e2e/bookworm:base"
	// The root has build.sh's runner: a whiteout takes it out of the
	// base, so that the runner the result has is the Dockerfile's.
	baseRef, err := name.ParseReference(base)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(baseRef, hosttest.OCIImage(t, v1.Config{Env: []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"}},
		mutate.Addendum{Layer: hosttest.FileLayer(t, rootTar), MediaType: types.OCIUncompressedLayer},
		mutate.Addendum{Layer: layerFrom(t, []tarEntry{{name: "usr/bin/.wh.act_runner", mode: 0o644}}), MediaType: types.OCILayer})); err != nil {
		t.Fatalf("push %s: %v", base, err)
	}

	// buildah's own storage, in the test's directory: nothing of it
	// outlives the test.
	store := []string{"--root", filepath.Join(tmp, "storage"), "--runroot", filepath.Join(tmp, "run"), "--storage-driver", "vfs"}
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, buildah, append(append([]string(nil), store...), args...)...)
		cmd.Env = append(os.Environ(), "BUILDAH_ISOLATION=chroot")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("buildah %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	built := host + "/e2e/gitea-runner:built"
	start := time.Now()
	run("bud", "--isolation", "chroot", "--tls-verify=false", "--layers=false",
		"--build-arg", "BASE="+base, "--build-arg", "GO_IMAGE="+base,
		"--network", "host", "--build-arg", "GOPROXY="+goEnv(t, "GOPROXY"),
		"-v", goEnv(t, "GOROOT")+":/usr/local/go:ro",
		"-v", goEnv(t, "GOMODCACHE")+":/root/go/pkg/mod",
		// and its build cache: without it the runner's build took 14 of
		// this test's 16 minutes on a loaded two-core machine.
		"-v", goEnv(t, "GOCACHE")+":/root/.cache/go-build",
		// The host's trust store: this machine's network may intercept
		// TLS with a CA of its own, which the Debian base does not know.
		"-v", "/etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro",
		"-f", "../images/docker/Dockerfile.gitea", "-t", built, "../images/docker")
	t.Logf("FIGURE images/docker/Dockerfile.gitea built with buildah (vfs, chroot) in %s", time.Since(start).Round(time.Second))
	version := run("run", "--isolation", "chroot", mustFrom(t, run, built), "--", "/bin/act_runner", "--version")
	if !strings.Contains(version, "v1.0.8") {
		t.Errorf("the image's runner says %q, want v1.0.8", version)
	}
	run("push", "--tls-verify=false", built, "docker://"+built)

	is, err := imagestore.Open(imagestore.Options{Dir: filepath.Join(tmp, "images")})
	if err != nil {
		t.Fatal(err)
	}
	im, err := is.Pull(ctx, built, imagestore.PullAlways, nil)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(im.Path()); err == nil {
		t.Logf("FIGURE Dockerfile.gitea image flattened (%s): %d MiB", im.FSType, fi.Size()>>20)
	}
	if err := vmroot.CheckRunner(im, "/bin/act_runner"); err != nil {
		t.Error(err)
	}
	if backend, err := vmroot.CheckDocker(im); err != nil || backend != initramfs.NFT {
		t.Errorf("CheckDocker: %q, %v; want bookworm's iptables-nft", backend, err)
	}
	// The control: the base alone has Docker, but no runner.
	bim, err := is.Pull(ctx, base, imagestore.PullAlways, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := vmroot.CheckRunner(bim, "/bin/act_runner"); err == nil {
		t.Error("the base has a runner of its own: the result proves nothing of the Dockerfile's")
	}
}

// goEnv is the host Go's setting of name.
func goEnv(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("go", "env", name).Output()
	if err != nil {
		t.Fatalf("go env %s: %v", name, err)
	}
	return strings.TrimSpace(string(out))
}

// mustFrom makes a working container of image and returns its name.
func mustFrom(t *testing.T, run func(...string) string, image string) string {
	t.Helper()
	out := strings.TrimSpace(run("from", "--tls-verify=false", "--pull-never", image))
	lines := strings.Split(out, "\n")
	return lines[len(lines)-1]
}
