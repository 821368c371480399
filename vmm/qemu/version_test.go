package qemu

import (
	"context"
	"regexp"
	"testing"
)

func TestVersionIsTheTemplateKeys(t *testing.T) {
	for out, want := range map[string]string{
		"QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022": "qemu 7.2.22",
		"QEMU emulator version 8.2.2\n": "qemu 8.2.2",
	} {
		if got, err := parseVersion([]byte(out)); err != nil || got != want {
			t.Errorf("%q: %q, %v; want %q", out, got, err, want)
		}
	}
	if _, err := parseVersion([]byte("qemu-img version 7.2.22")); err == nil {
		t.Error("another program's version taken for QEMU's")
	}
	v, err := (&Driver{Binary: "qemu-system-x86_64"}).Version(context.Background())
	if err != nil || !regexp.MustCompile(`^qemu \d+\.\d+\.\d+$`).MatchString(v) {
		t.Fatalf("this host's QEMU: %q, %v", v, err)
	}
	t.Logf("this host's QEMU: %s", v)
}
