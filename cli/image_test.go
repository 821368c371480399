package cli

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
)

// TestImageCommands pulls an image from a loopback registry into a store
// named by a configuration file, lists it, and removes it.
func TestImageCommands(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("needs root: flattening sets owners (make test runs as root)")
	}
	srv := httptest.NewServer(hosttest.Registry())
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	tw.WriteHeader(&tar.Header{Name: "bin/act_runner", Typeflag: tar.TypeReg, Mode: 0o755, Size: 2})
	tw.Write([]byte("#!"))
	tw.Close()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layer.Bytes())), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, _ := mutate.AppendLayers(empty.Image, l)
	ref, _ := name.ParseReference(host + "/ci/runner:v1")
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "kernel"), nil, 0o644)
	os.WriteFile(filepath.Join(dir, "token"), []byte("secret-token\n"), 0o600)
	cfg := filepath.Join(dir, "fa.yaml")
	os.WriteFile(cfg, []byte(strings.ReplaceAll(giteaConfig("DIR/state", `image: "HOST/ci/runner:v1"`), "DIR", dir)), 0o600)
	os.WriteFile(cfg, bytes.ReplaceAll(must2(os.ReadFile(cfg)), []byte("HOST"), []byte(host)), 0o600)

	run := func(args ...string) string {
		t.Helper()
		var out, errb bytes.Buffer
		if code := Main(append([]string{"image"}, append(args, "--config", cfg)...), &out, &errb); code != 0 {
			t.Fatalf("image %v: exit %d\n%s", args, code, errb.String())
		}
		return out.String()
	}
	out := run("pull", host+"/ci/runner:v1")
	if !strings.Contains(out, "sha256:") || !strings.Contains(out, "erofs") {
		t.Fatalf("pull printed:\n%s", out)
	}
	var list []struct {
		Digest string   `json:"digest"`
		Refs   []string `json:"refs"`
		InUse  bool     `json:"in_use"`
	}
	if err := json.Unmarshal([]byte(run("ls", "-o", "json")), &list); err != nil || len(list) != 1 || len(list[0].Refs) != 1 {
		t.Fatalf("ls: %+v, %v", list, err)
	}
	if txt := run("ls"); !strings.Contains(txt, "ci/runner:v1") || !strings.Contains(txt, list[0].Digest[7:19]) {
		t.Fatalf("ls:\n%s", txt)
	}
	if out := run("rm", host+"/ci/runner:v1"); !strings.Contains(out, list[0].Digest) {
		t.Fatalf("rm printed:\n%s", out)
	}
	if txt := run("ls"); strings.Contains(txt, "ci/runner") {
		t.Fatalf("ls after rm:\n%s", txt)
	}
	run("pull", "--policy", "IfNotPresent", host+"/ci/runner:v1")
	if out := run("prune", "--all"); !strings.Contains(out, list[0].Digest) {
		t.Fatalf("prune --all printed:\n%s", out)
	}
}

func must2[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
