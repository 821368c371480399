package config

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// testFile is the name configurations are parsed under in tests.
const testFile = "fireactions.yaml"

// testToken is the secret the fixture's token file holds.
const testToken = "s3cr3t-Token-0123456789"

// minimalYAML is the smallest valid configuration: one forge, one pool.
// $DIR is the fixture directory.
const minimalYAML = `host_id: test-host
forges:
  - name: gitea
    type: gitea
    url: https://gitea.example.com
    token_file: $DIR/token
pools:
  - name: default
    forge: gitea
    labels: [linux]
    min_idle: 1
    max: 2
    vm:
      kernel: $DIR/vmlinuz-6.6.30
      root_initramfs: $DIR/root.cpio
`

// githubYAML is a small valid configuration with a GitHub App forge and
// an org pool. $DIR is the fixture directory.
const githubYAML = `host_id: test-host
forges:
  - name: gh
    type: github
    app_id: 12345
    app_private_key_file: $DIR/app.pem
pools:
  - name: default
    forge: gh
    scope: org:acme
    labels: [linux]
    max: 2
    vm:
      kernel: $DIR/vmlinuz-6.6.30
      root_initramfs: $DIR/root.cpio
    repos: [acme/widgets]
`

// gitlabYAML is a small valid configuration with a GitLab forge and a
// project pool. $DIR is the fixture directory.
const gitlabYAML = `host_id: test-host
forges:
  - name: gl
    type: gitlab
    url: https://gitlab.example.com
    token_file: $DIR/token
pools:
  - name: default
    forge: gl
    scope: project:acme/tools/widgets
    labels: [linux]
    max: 2
    vm:
      kernel: $DIR/vmlinuz-6.6.30
      root_initramfs: $DIR/root.cpio
`

// testKeyPEM is a throwaway RSA key as GitHub hands App keys out: a PKCS
// #1 "RSA PRIVATE KEY" PEM block. It is made once per test run.
var testKeyPEM = sync.OnceValue(func() []byte {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
})

// fixture is a directory holding the files a configuration points at: a
// kernel, a root initramfs, a module tree, a mode 600 token file and a
// mode 600 GitHub App key (app.pem).
type fixture struct {
	t   *testing.T
	dir string
	env map[string]string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{t: t, dir: t.TempDir(), env: map[string]string{}}
	f.write("vmlinuz-6.6.30", "", 0o644)
	f.write("root.cpio", "", 0o644)
	f.write("token", "  "+testToken+"\n", 0o600)
	f.write("app.pem", string(testKeyPEM()), 0o600)
	if err := os.MkdirAll(f.path("modules/6.6.30"), 0o755); err != nil {
		t.Fatal(err)
	}
	return f
}

// path is name inside the fixture directory.
func (f *fixture) path(name string) string { return filepath.Join(f.dir, name) }

// write creates a file in the fixture directory with exactly mode perm.
func (f *fixture) write(name, content string, perm os.FileMode) {
	f.t.Helper()
	if err := os.WriteFile(f.path(name), []byte(content), perm); err != nil {
		f.t.Fatal(err)
	}
	if err := os.Chmod(f.path(name), perm); err != nil { // despite the umask
		f.t.Fatal(err)
	}
}

// expand replaces $DIR with the fixture directory.
func (f *fixture) expand(text string) string { return strings.ReplaceAll(text, "$DIR", f.dir) }

// parse parses text (after expand) with the fixture's environment.
func (f *fixture) parse(text string) (*Config, error) {
	return Parse(testFile, []byte(f.expand(text)), func(k string) (string, bool) {
		v, ok := f.env[k]
		return v, ok
	})
}

// mustParse parses text and fails the test on any error.
func (f *fixture) mustParse(text string) *Config {
	f.t.Helper()
	c, err := f.parse(text)
	if err != nil {
		f.t.Fatalf("Parse: unexpected error:\n%v", err)
	}
	return c
}

// replace returns text with old replaced by new, failing the test when
// old is not in text. An empty old appends new.
func replace(t *testing.T, text, old, new string) string {
	t.Helper()
	if old == "" {
		return text + new
	}
	if !strings.Contains(text, old) {
		t.Fatalf("test bug: %q is not in the configuration", old)
	}
	return strings.Replace(text, old, new, 1)
}

// lineOf is the 1-based number of the first line of text containing s.
func lineOf(t *testing.T, text, s string) int {
	t.Helper()
	for i, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			return i + 1
		}
	}
	t.Fatalf("test bug: %q is not in the configuration", s)
	return 0
}

// wantFieldError parses text and checks it fails with one line naming
// field with want, and never showing secret.
func (f *fixture) wantFieldError(text, field, want, secret string) {
	f.t.Helper()
	_, err := f.parse(text)
	if err == nil {
		f.t.Fatalf("Parse succeeded; want an error naming %s", field)
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") || !strings.Contains(msg, field+":") || !strings.Contains(msg, want) {
		f.t.Fatalf("got:\n%s\nwant one line naming %s with %q", msg, field, want)
	}
	if strings.Contains(msg, secret) {
		f.t.Fatalf("the message shows a secret: %s", msg)
	}
}
