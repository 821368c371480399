// Command firecracker is the Firecracker test double's binary: installed as
// "firecracker" it serves the API and boots guests with QEMU, installed as
// "jailer" it builds the jail and execs the former. firecrackerdouble.Build builds
// both and compiles in where the API description is.
package main

import (
	"context"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/nixos-fireactions/nixos-fireactions/internal/double/firecrackerdouble"
)

// specFile is the API description's path, set by firecrackerdouble.Build.
var specFile string

func main() {
	env := firecrackerdouble.Env{Getenv: os.Getenv, Stdout: os.Stdout, Stderr: os.Stderr, SpecFile: specFile}
	if strings.Contains(filepath.Base(os.Args[0]), "jailer") {
		os.Exit(firecrackerdouble.RunJailer(os.Args[1:], env))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(firecrackerdouble.RunFirecracker(ctx, os.Args[1:], env))
}
