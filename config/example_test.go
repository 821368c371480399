package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// parseExample parses testdata/NAME once its boot files and secrets exist:
// the test points the example's absolute paths (/var/lib/fireactions/boot/
// and /run/secrets/) into a fixture directory holding them.
func parseExample(t *testing.T, name string, files map[string]string) (*Config, *fixture) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t)
	for file, content := range files {
		perm := os.FileMode(0o600)
		if content == "" {
			perm = 0o644 // a boot file
		}
		f.write(file, content, perm)
	}
	text := strings.NewReplacer(
		"/var/lib/fireactions/boot/", f.dir+"/",
		"/run/secrets/", f.dir+"/",
	).Replace(string(data))
	if text == string(data) {
		t.Fatal("test bug: no path in the example was replaced")
	}
	return f.mustParse(text), f
}

// checks compares what an example parses to with what it should.
type checks []struct {
	what      string
	got, want any
}

func (cs checks) run(t *testing.T) {
	t.Helper()
	for _, c := range cs {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}
}

// testdata/example.yaml, the README's example, is a valid configuration
// once its boot files and token exist.
func TestExampleParses(t *testing.T) {
	c, _ := parseExample(t, "example.yaml", map[string]string{
		"vmlinuz-6.12.8":      "",
		"runner-root.cpio.gz": "",
		"gitea-runner-token":  testToken + "\n",
	})
	p := c.Pools[0]
	checks{
		{"forge type", c.Forges[0].Type, "gitea"},
		{"token", c.Forges[0].Token, testToken},
		{"gateway", c.Network.Gateway, "10.200.0.1"},
		{"pool", p.Name + " on " + p.Forge + " " + p.Scope, "default on gitea org:acme"},
		{"runner path", p.Runner.Path, "/bin/act_runner"},
		{"modules_dir", p.VM.ModulesDir, "/lib/modules/6.12.8"},
	}.run(t)
}

// testdata/github.yaml, a GitHub App example, is valid once its boot
// files, key and secrets exist.
func TestGitHubExampleParses(t *testing.T) {
	c, f := parseExample(t, "github.yaml", map[string]string{
		"vmlinuz-6.12.8":              "",
		"actions-runner-root.cpio.gz": "",
		"github-app.pem":              string(testKeyPEM()),
		"github-webhook-secret":       "hook-" + testToken + "\n",
		"fireactions-api-tokens":      "# ops\n" + testToken + "\n",
	})
	fo, p := c.Forges[0], c.Pools[0]
	checks{
		{"forge type", fo.Type, "github"},
		{"url", fo.URL, "https://api.github.com"},
		{"app id", fo.AppID, int64(123456)},
		{"app key", string(fo.AppPrivateKey), string(testKeyPEM())},
		{"token", fo.Token, ""},
		{"webhook secret", fo.WebhookSecret, "hook-" + testToken},
		{"api tokens", strings.Join(c.API.Tokens, ","), testToken},
		{"api socket", c.API.Socket, "/run/fireactions/api.sock"},
		{"drain grace", c.DrainGrace, 15 * time.Minute},
		{"console logs kept", c.ConsoleLogs.Keep, 72 * time.Hour},
		{"pool", p.Name + " on " + p.Forge + " " + p.Scope, "default on github org:acme"},
		{"repos", strings.Join(p.Repos, ","), "acme/widgets,acme/gadgets"},
		{"runner path", p.Runner.Path, "/home/runner/run.sh"},
		{"runner uid:gid", [2]int{p.Runner.UID, p.Runner.GID}, [2]int{1001, 1001}},
		{"runner group", p.Runner.Group, ""},
		{"kernel", p.VM.Kernel, f.path("vmlinuz-6.12.8")},
	}.run(t)
}

// testdata/gitlab.yaml, a GitLab project example, is valid once its boot
// files and token exist.
func TestGitLabExampleParses(t *testing.T) {
	c, _ := parseExample(t, "gitlab.yaml", map[string]string{
		"vmlinuz-6.12.8":             "",
		"gitlab-runner-root.cpio.gz": "",
		"gitlab-token":               testToken + "\n",
		"gitlab-webhook-token":       "hook-" + testToken + "\n",
	})
	fo, p := c.Forges[0], c.Pools[0]
	checks{
		{"forge type", fo.Type, "gitlab"},
		{"token", fo.Token, testToken},
		{"webhook secret", fo.WebhookSecret, "hook-" + testToken},
		{"pool", p.Name + " on " + p.Forge + " " + p.Scope, "default on gitlab project:acme/tools/widgets"},
		{"runner path", p.Runner.Path, "/usr/bin/gitlab-runner"},
		{"executor", p.Runner.Executor, "shell"},
		{"locked", p.Runner.Locked != nil && *p.Runner.Locked, true},
		{"access level", p.Runner.AccessLevel, "not_protected"},
		{"maximum timeout", p.Runner.MaximumTimeout, 3 * time.Hour},
		{"gid", p.Runner.GID, 1000},
	}.run(t)
}
