package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
)

// Where the container tools' mirror settings go in the guest.
const (
	containerdCertsDir = "/etc/containerd/certs.d"
	buildkitConfigPath = "/etc/buildkit/buildkitd.toml"
)

// configureRegistry sets the guest up for the host's registry cache, on
// the root the runner will run on and before it starts: the mirrors for
// containerd (certs.d/<registry>/hosts.toml), BuildKit (buildkitd.toml)
// and Docker (daemon.json), the cache's CA in the trust store, the proxy
// in the runner's environment (cfg.Runner.Env gains what it lacks), and
// dockerd when the pool asks for it. Values are written as they are:
// nothing is expanded.
func (a *Agent) configureRegistry(ctx context.Context, cfg *agentproto.Config) error {
	reg := cfg.Registry
	if reg == nil {
		return nil
	}
	mirrors, err := parseMirrors(reg.Mirrors)
	if err != nil {
		return fmt.Errorf("registry mirrors: %w", err)
	}
	if err := a.writeMirrorFiles(mirrors); err != nil {
		return err
	}
	if reg.Docker || len(mirrors["docker.io"]) > 0 {
		group := ""
		var nets *dockerNets
		if reg.Docker {
			group = strconv.Itoa(cfg.Runner.GID) // the runner may use the socket
			n, err := chooseDockerNets(dockerAvoid(cfg.Network, cfg.Report.URL, reg))
			if err != nil {
				return err
			}
			nets = &n
		}
		if err := a.writeDockerConfig(mirrors["docker.io"], group, nets); err != nil {
			if cfg.Root != nil {
				return fmt.Errorf("image %s: %w", imageName(*cfg.Root), err)
			}
			return err
		}
	}
	if len(reg.CA) > 0 {
		if err := a.trustCA(reg.CA); err != nil {
			return err
		}
	}
	cfg.Runner.Env = withRegistryEnv(cfg.Runner.Env, reg)
	a.logf("registry: mirrors for %d registries, proxy %v, cache CA %v, docker %v",
		len(mirrors), reg.HTTPProxy != "" || reg.HTTPSProxy != "", len(reg.CA) > 0, reg.Docker)
	if reg.Docker {
		return a.startDocker(ctx, withRegistryEnv([]string{"PATH=" + DefaultPath, "HOME=/root"}, reg), reg.DockerWait)
	}
	return nil
}

// parseMirrors parses the mirrors of every registry.
func parseMirrors(in map[string][]string) (map[string][]mirror, error) {
	out := map[string][]mirror{}
	for _, reg := range slices.Sorted(maps.Keys(in)) {
		if err := registryKey(reg); err != nil {
			return nil, err
		}
		for _, s := range in[reg] {
			m, err := parseMirror(s)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", reg, err)
			}
			out[reg] = append(out[reg], m)
		}
	}
	return out, nil
}

// writeMirrorFiles writes containerd's hosts.toml of each mirrored
// registry and BuildKit's mirrors.
func (a *Agent) writeMirrorFiles(mirrors map[string][]mirror) error {
	if len(mirrors) == 0 {
		return nil
	}
	for reg, ms := range mirrors {
		p := containerdCertsDir + "/" + reg + "/hosts.toml"
		if err := a.writeRootFile(p, []byte(containerdHosts(reg, ms)), 0o644); err != nil {
			return fmt.Errorf("writing %s: %w", p, err)
		}
	}
	return a.writeBuildkitConfig(buildkitMirrors(mirrors))
}

// writeBuildkitConfig writes BuildKit's registry tables. An image that
// brings its own buildkitd.toml keeps it, with the tables appended,
// unless it configures registries itself (TOML forbids a table twice).
func (a *Agent) writeBuildkitConfig(tables string) error {
	old, err := os.ReadFile(a.path(buildkitConfigPath))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		old = nil
	case err != nil:
		return fmt.Errorf("reading %s: %w", buildkitConfigPath, err)
	case bytes.Contains(old, []byte("[registry.")):
		a.logf("registry: the image's %s configures registries; left as it is", buildkitConfigPath)
		return nil
	}
	if len(old) > 0 && old[len(old)-1] != '\n' {
		old = append(old, '\n')
	}
	if len(old) > 0 {
		old = append(old, '\n')
	}
	if err := a.writeRootFile(buildkitConfigPath, append(old, tables...), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", buildkitConfigPath, err)
	}
	return nil
}

// writeDockerConfig merges Docker Hub's mirrors, the socket's group and
// Docker's subnets into daemon.json.
func (a *Agent) writeDockerConfig(hub []mirror, group string, nets *dockerNets) error {
	old, err := os.ReadFile(a.path(dockerConfigPath))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("reading %s: %w", dockerConfigPath, err)
	}
	b, err := dockerDaemonJSON(old, hub, group, nets)
	if err != nil {
		return err
	}
	if err := a.writeRootFile(dockerConfigPath, b, 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", dockerConfigPath, err)
	}
	return nil
}

// withRegistryEnv adds the proxy variables, in both cases as tools read
// either, and NODE_EXTRA_CA_CERTS when there is a CA, to env where it
// does not set them already: the host's runner environment wins.
func withRegistryEnv(env []string, reg *agentproto.Registry) []string {
	env = append([]string(nil), env...)
	set := func(key, value string) {
		if _, ok := lookupEnv(env, key); !ok && value != "" {
			env = append(env, key+"="+value)
		}
	}
	for _, kv := range [][2]string{{"HTTP_PROXY", reg.HTTPProxy}, {"HTTPS_PROXY", reg.HTTPSProxy}, {"NO_PROXY", reg.NoProxy}} {
		set(kv[0], kv[1])
		set(strings.ToLower(kv[0]), kv[1])
	}
	if len(reg.CA) > 0 {
		set("NODE_EXTRA_CA_CERTS", cacheCAPath)
	}
	return env
}

// runAfterRegistry configures the registry cache (configureRegistry) and
// then runs the runner with the environment it gained.
func (a *Agent) runAfterRegistry(ctx context.Context, cfg *agentproto.Config, q *reportQueue) error {
	if err := a.configureRegistry(ctx, cfg); err != nil {
		return err
	}
	return a.runRunner(ctx, cfg.Runner, q)
}
