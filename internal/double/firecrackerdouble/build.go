package firecrackerdouble

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/vmm/firecracker/apispec"
)

// Binaries are a built double: the same program under both names.
type Binaries struct {
	Firecracker string // <dir>/firecracker
	Jailer      string // <dir>/jailer
	Spec        string // the API description it checks against
}

// Build compiles the double into dir as firecracker and jailer, with the
// path of the API description in this source tree compiled in. It needs
// the go tool and the module's source: it is for tests.
func Build(ctx context.Context, dir string) (Binaries, error) {
	src, err := sourceDir()
	if err != nil {
		return Binaries{}, err
	}
	b := Binaries{
		Firecracker: filepath.Join(dir, "firecracker"),
		Jailer:      filepath.Join(dir, "jailer"),
		Spec:        specFile(src),
	}
	if _, err := os.Stat(b.Spec); err != nil {
		return Binaries{}, fmt.Errorf("firecrackerdouble: API description: %w", err)
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", b.Firecracker,
		"-ldflags", "-X main.specFile="+b.Spec, "./cmd/firecracker")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return Binaries{}, fmt.Errorf("firecrackerdouble: build: %w\n%s", err, out)
	}
	if err := os.Link(b.Firecracker, b.Jailer); err != nil {
		return Binaries{}, fmt.Errorf("firecrackerdouble: link the jailer: %w", err)
	}
	return b, nil
}

// sourceDir is where this package's source is.
func sourceDir() (string, error) {
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		return "", fmt.Errorf("firecrackerdouble: locate the source")
	}
	return filepath.Dir(self), nil
}

// specFile is Firecracker's API description in this source tree, the
// driver's testdata.
func specFile(src string) string {
	return filepath.Join(src, "..", "..", "..", "vmm", "firecracker", "testdata", "firecracker-api-1.17.yaml")
}

// LoadSpec loads Firecracker's API description from this source tree, as
// the double checks requests against it: for tests that hold requests to
// it without the double's binary.
func LoadSpec(t testing.TB) *apispec.Spec {
	t.Helper()
	src, err := sourceDir()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(specFile(src))
	if err != nil {
		t.Fatal(err)
	}
	s, err := apispec.Load(data)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
