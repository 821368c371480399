package config

import (
	"os"
	"path/filepath"
	"strings"
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

// fixture is a directory holding the files a configuration points at: a
// kernel, a root initramfs, a module tree and a mode 600 token file.
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
