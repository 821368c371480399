package agent

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
)

// cacheCAPath is where the cache's CA goes for the distribution's own
// tools: update-ca-certificates (Debian, Ubuntu) picks up *.crt here, and
// NODE_EXTRA_CA_CERTS points at it.
const cacheCAPath = "/usr/local/share/ca-certificates/fireactions-cache.crt"

// caBundles are the distributions' PEM bundles that TLS libraries read;
// the CA is appended to each one the guest has. The first is created
// when the guest has none (a busybox root).
var caBundles = []string{
	"/etc/ssl/certs/ca-certificates.crt", // Debian, Ubuntu, Alpine; Go's first choice
	"/etc/pki/tls/certs/ca-bundle.crt",   // Fedora, RHEL
	"/etc/ssl/ca-bundle.pem",             // openSUSE
}

// checkCA accepts PEM that holds certificates only, at least one.
func checkCA(ca []byte) error {
	rest, n := ca, 0
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return fmt.Errorf("cache CA: a PEM %q block, want certificates only", block.Type)
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return fmt.Errorf("cache CA: %w", err)
		}
		n++
	}
	if n == 0 || len(bytes.TrimSpace(rest)) > 0 {
		return errors.New("cache CA: not a PEM certificate")
	}
	return nil
}

// trustCA adds the cache's CA to the guest's trust store: its own file,
// and appended to every bundle the guest has (once: a bundle that holds
// it already is left alone). A guest without a bundle gets one holding
// the CA alone.
func (a *Agent) trustCA(ca []byte) error {
	if err := checkCA(ca); err != nil {
		return err
	}
	ca = append(bytes.TrimSpace(ca), '\n')
	if err := a.writeRootFile(cacheCAPath, ca, 0o644); err != nil {
		return fmt.Errorf("writing the cache CA: %w", err)
	}
	found := 0
	for _, bundle := range caBundles {
		p, err := a.resolveInRoot(bundle)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("trusting the cache CA in %s: %w", bundle, err)
		}
		found++
		if err := appendOnce(p, ca); err != nil {
			return fmt.Errorf("trusting the cache CA in %s: %w", bundle, err)
		}
	}
	if found == 0 {
		if err := a.writeRootFile(caBundles[0], ca, 0o644); err != nil {
			return fmt.Errorf("creating %s: %w", caBundles[0], err)
		}
	}
	return nil
}

// appendOnce appends pemText to the regular file at p unless it holds it.
func appendOnce(p string, pemText []byte) error {
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	if bytes.Contains(b, bytes.TrimSpace(pemText)) {
		return nil
	}
	var add []byte
	if len(b) > 0 && b[len(b)-1] != '\n' {
		add = append(add, '\n')
	}
	add = append(add, pemText...)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	_, err = f.Write(add)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// resolveInRoot follows the symbolic links of guest path p inside the
// guest's root (an absolute link target is the guest's, not the host's)
// to a regular file, and returns its path in the agent's view.
func (a *Agent) resolveInRoot(p string) (string, error) {
	guest := path.Clean(p)
	for hops := 0; hops < 16; hops++ {
		full := a.path(guest)
		fi, err := os.Lstat(full)
		if err != nil {
			return "", err
		}
		switch {
		case fi.Mode().IsRegular():
			return full, nil
		case fi.Mode()&fs.ModeSymlink == 0:
			return "", fmt.Errorf("%s is not a regular file", guest)
		}
		target, err := os.Readlink(full)
		if err != nil {
			return "", err
		}
		if path.IsAbs(target) {
			guest = path.Clean(target)
		} else {
			guest = path.Join(path.Dir(guest), target)
		}
	}
	return "", fmt.Errorf("%s: too many symbolic links", p)
}

// writeRootFile replaces guest file p with a root-owned file of mode
// perm, creating its parent directories (0755).
func (a *Agent) writeRootFile(p string, content []byte, perm uint32) error {
	full := a.path(p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		return err
	}
	return replaceFile(full, content, perm)
}
