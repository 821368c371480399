package fcdouble

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
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
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		return Binaries{}, fmt.Errorf("fcdouble: locate the source")
	}
	src := filepath.Dir(self)
	b := Binaries{
		Firecracker: filepath.Join(dir, "firecracker"),
		Jailer:      filepath.Join(dir, "jailer"),
		Spec:        filepath.Join(src, "..", "testdata", "firecracker-api-1.17.yaml"),
	}
	if _, err := os.Stat(b.Spec); err != nil {
		return Binaries{}, fmt.Errorf("fcdouble: API description: %w", err)
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", b.Firecracker,
		"-ldflags", "-X main.specFile="+b.Spec, "./cmd/fcdouble")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return Binaries{}, fmt.Errorf("fcdouble: build: %w\n%s", err, out)
	}
	if err := os.Link(b.Firecracker, b.Jailer); err != nil {
		return Binaries{}, fmt.Errorf("fcdouble: link the jailer: %w", err)
	}
	return b, nil
}
