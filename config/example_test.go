package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testdata/example.yaml, the README's example, is a valid configuration
// once its boot files and token exist: the test points its absolute paths
// into a temporary directory holding them.
func TestExampleParses(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t)
	f.write("vmlinuz-6.12.8", "", 0o644)
	f.write("runner-root.cpio.gz", "", 0o644)
	f.write("gitea-runner-token", testToken+"\n", 0o600)
	text := strings.NewReplacer(
		"/var/lib/fireactions/boot/", f.dir+"/",
		"/run/secrets/", f.dir+"/",
	).Replace(string(data))
	if text == string(data) {
		t.Fatal("test bug: no path in the example was replaced")
	}

	c := f.mustParse(text)
	p := c.Pools[0]
	for _, check := range []struct{ what, got, want string }{
		{"forge type", c.Forges[0].Type, "gitea"},
		{"token", c.Forges[0].Token, testToken},
		{"gateway", c.Network.Gateway, "10.200.0.1"},
		{"pool", p.Name + " on " + p.Forge + " " + p.Scope, "default on gitea org:acme"},
		{"runner path", p.Runner.Path, "/bin/act_runner"},
		{"modules_dir", p.VM.ModulesDir, "/lib/modules/6.12.8"},
	} {
		if check.got != check.want {
			t.Errorf("%s = %q, want %q", check.what, check.got, check.want)
		}
	}
}
