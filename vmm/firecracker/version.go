package firecracker

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"time"
)

var versionLine = regexp.MustCompile(`(?m)^Firecracker v(\d+\.\d+\.\d+\S*)`)

// Version is the firecracker binary's version as a warm start's template
// key holds it ("firecracker 1.17.0"): a snapshot is loaded only by the
// Firecracker version that made it, so a new version rebuilds the
// template rather than failing every restore.
func (d *Driver) Version(ctx context.Context) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, d.Binary, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("firecracker: %s --version: %w", d.Binary, err)
	}
	m := versionLine.FindSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("firecracker: no version in %.200q", out)
	}
	return "firecracker " + string(m[1]), nil
}
