package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
)

func TestReadConfigRemovesTheFileEvenWhenInvalid(t *testing.T) {
	root := t.TempDir()
	p := filepath.Join(root, agentproto.ConfigPath)
	must(t, os.MkdirAll(filepath.Dir(p), 0o700))
	must(t, os.WriteFile(p, []byte(`{"runner": {"files": [{"content": "c2VjcmV0"}]}, oops`), 0o600))
	if _, err := readConfig(root); err == nil || !strings.Contains(err.Error(), "parsing config") {
		t.Errorf("err %v", err)
	}
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("config left behind: %v", err)
	}
}

func TestCheckConfig(t *testing.T) {
	valid := func() agentproto.Config { return testConfig("http://10.200.0.1:8080") }
	for name, c := range map[string]struct {
		edit func(*agentproto.Config)
		err  string
	}{
		"valid":         {func(*agentproto.Config) {}, ""},
		"no url":        {func(c *agentproto.Config) { c.Report.URL = "" }, "no report URL"},
		"no command":    {func(c *agentproto.Config) { c.Runner.Command = nil }, "no runner command"},
		"root uid":      {func(c *agentproto.Config) { c.Runner.UID = 0 }, "must not run as root"},
		"root user":     {func(c *agentproto.Config) { c.Runner.User = "root" }, "invalid runner user"},
		"colon user":    {func(c *agentproto.Config) { c.Runner.User = "a:b" }, "invalid runner user"},
		"relative home": {func(c *agentproto.Config) { c.Runner.Home = "home/x" }, "must be absolute"},
		"slash workdir": {func(c *agentproto.Config) { c.Runner.WorkDir = "/" }, "must be absolute, not /"},
		"relative file": {func(c *agentproto.Config) { c.Runner.Files[0].Path = "x" }, "must be an absolute path"},
		"bad hostname":  {func(c *agentproto.Config) { c.Hostname = "a b" }, "invalid hostname"},
	} {
		cfg := valid()
		c.edit(&cfg)
		err := checkConfig(&cfg)
		if c.err == "" && err != nil || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
			t.Errorf("%s: err %v, want %q", name, err, c.err)
		}
	}
	cfg := valid()
	cfg.Runner.Home, cfg.Runner.WorkDir = "", ""
	if err := checkConfig(&cfg); err != nil || cfg.Runner.Home != "/home/runner" || cfg.Runner.WorkDir != "/home/runner" {
		t.Errorf("defaults: %v home %q workdir %q", err, cfg.Runner.Home, cfg.Runner.WorkDir)
	}
}
