package qemu

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"time"
)

var versionLine = regexp.MustCompile(`QEMU emulator version (\d+\.\d+\.\d+)`)

// Version is the QEMU binary's version as a warm start's template key
// holds it ("qemu 7.2.22"): QEMU loads a migration stream only from the
// same version (the Debian revision is not part of it).
func (d *Driver) Version(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, d.Binary, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("qemu: %s --version: %w", d.Binary, err)
	}
	return parseVersion(out)
}

func parseVersion(out []byte) (string, error) {
	m := versionLine.FindSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("qemu: no version in %q", clip(out))
	}
	return "qemu " + string(m[1]), nil
}

func clip(b []byte) string {
	if len(b) > 200 {
		b = b[:200]
	}
	return string(b)
}
