// Command fcdouble is the Firecracker test double's binary: installed as
// "firecracker" it serves the API and boots guests with QEMU, installed as
// "jailer" it builds the jail and execs the former. fcdouble.Build builds
// both and compiles in where the API description is.
package main

import (
	"context"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/nixos-fireactions/nixos-fireactions/vmm/firecracker/fcdouble"
)

// specFile is the API description's path, set by fcdouble.Build.
var specFile string

func main() {
	env := fcdouble.Env{Getenv: os.Getenv, Stdout: os.Stdout, Stderr: os.Stderr, SpecFile: specFile}
	if strings.Contains(filepath.Base(os.Args[0]), "jailer") {
		os.Exit(fcdouble.RunJailer(os.Args[1:], env))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(fcdouble.RunFirecracker(ctx, os.Args[1:], env))
}
