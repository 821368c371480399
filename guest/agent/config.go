package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
)

// readConfig reads the agent's config and removes the file, whatever its
// content: it carries the runner's credential, which must not be left where
// the job could read it (the runner gets its own copy via Runner.Files).
// Failing to remove it is fatal for the same reason.
func readConfig(root string) (agentproto.Config, error) {
	var cfg agentproto.Config
	p := filepath.Join(root, agentproto.ConfigPath)
	b, err := os.ReadFile(p)
	if err != nil {
		return cfg, fmt.Errorf("reading config: %w", err)
	}
	rmErr := os.Remove(p)
	err = json.Unmarshal(b, &cfg)
	clear(b) // one copy fewer: cfg holds its own until writeRunnerFiles
	if rmErr != nil {
		return cfg, fmt.Errorf("removing config after reading it: %w", rmErr)
	}
	if err != nil {
		return cfg, fmt.Errorf("parsing config %s: %w", agentproto.ConfigPath, err)
	}
	if cfg.Template {
		if err := checkTemplate(cfg); err != nil {
			return cfg, fmt.Errorf("config %s: %w", agentproto.ConfigPath, err)
		}
		return cfg, nil
	}
	if err := checkConfig(&cfg); err != nil {
		return cfg, fmt.Errorf("config %s: %w", agentproto.ConfigPath, err)
	}
	return cfg, nil
}

// checkConfig rejects configs the agent cannot run safely, and fills in the
// runner's home and work directory when absent.
func checkConfig(cfg *agentproto.Config) error {
	r := &cfg.Runner
	switch {
	case cfg.Report.URL == "":
		return fmt.Errorf("no report URL")
	case len(r.Command) == 0 || r.Command[0] == "":
		return fmt.Errorf("no runner command")
	case !validName(r.User):
		return fmt.Errorf("invalid runner user %q", r.User)
	case r.UID <= 0 || r.GID <= 0:
		return fmt.Errorf("runner uid/gid %d/%d: the runner must not run as root", r.UID, r.GID)
	case strings.ContainsAny(cfg.Hostname, " \t\n/"):
		return fmt.Errorf("invalid hostname %q", cfg.Hostname)
	}
	if r.Home == "" {
		r.Home = "/home/" + r.User
	}
	if r.WorkDir == "" {
		r.WorkDir = r.Home
	}
	for _, d := range []string{r.Home, r.WorkDir} {
		if !path.IsAbs(d) || path.Clean(d) == "/" || strings.ContainsAny(d, ":\n") {
			return fmt.Errorf("runner directory %q must be absolute, not /, without ':'", d)
		}
	}
	for _, f := range r.Files {
		if !path.IsAbs(f.Path) || path.Clean(f.Path) == "/" {
			return fmt.Errorf("runner file %q must be an absolute path", f.Path)
		}
	}
	return nil
}

// validName is a user name that fits in /etc/passwd.
func validName(s string) bool {
	return s != "" && s != "root" && !strings.ContainsAny(s, ": \t\n/")
}

// checkTemplate refuses a template's config that carries anything of one
// VM's: whatever the template holds, every restore of it shares.
func checkTemplate(cfg agentproto.Config) error {
	switch {
	case cfg.Report.Token != "" || cfg.Report.URL != "":
		return fmt.Errorf("a template carries a report endpoint or token: it comes with each VM's identity")
	case len(cfg.Runner.Command) > 0 || len(cfg.Runner.Files) > 0 || len(cfg.Runner.Env) > 0:
		return fmt.Errorf("a template carries a runner: its credential comes with each VM's identity")
	case cfg.Network.Address != "" || cfg.Hostname != "" || cfg.VMID != "":
		return fmt.Errorf("a template carries an address, hostname or VM id: each VM's own come with its identity")
	case cfg.Root != nil || cfg.Registry != nil:
		return fmt.Errorf("a template carries a root or registry settings: they come with each VM's identity, after its writable disk")
	}
	return nil
}
