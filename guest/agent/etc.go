package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// writeNameFiles writes /etc/hostname, /etc/hosts and, when there are
// name servers, /etc/resolv.conf (into the root the guest runs on: with an
// image root, after the switch).
func (a *Agent) writeNameFiles(hostname string, dns []string) error {
	if hostname != "" {
		if err := a.writeEtc("hostname", hostname+"\n"); err != nil {
			return err
		}
	}
	hosts := "127.0.0.1\tlocalhost"
	if hostname != "" {
		hosts += " " + hostname
	}
	hosts += "\n::1\tlocalhost ip6-localhost ip6-loopback\n"
	if err := a.writeEtc("hosts", hosts); err != nil {
		return err
	}
	if len(dns) > 0 {
		var b strings.Builder
		for _, ns := range dns {
			fmt.Fprintf(&b, "nameserver %s\n", ns)
		}
		if err := a.writeEtc("resolv.conf", b.String()); err != nil {
			return err
		}
	}
	return nil
}

// writeEtc replaces /etc/<name> (a symlink too: root archives often link
// resolv.conf into /run) with a root-owned 0644 file.
func (a *Agent) writeEtc(name, content string) error {
	p := filepath.Join(a.Root, "etc", name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("writing /etc/%s: %w", name, err)
	}
	if err := replaceFile(p, []byte(content), 0o644); err != nil {
		return fmt.Errorf("writing /etc/%s: %w", name, err)
	}
	return nil
}
