package gitlabdouble

import (
	"errors"
	"fmt"
	"time"

	"github.com/BurntSushi/toml"
)

// RunnerConfig is one [[runners]] entry of a gitlab-runner config.toml,
// with the keys (and TOML types) gitlab-runner's configuration uses.
type RunnerConfig struct {
	Name            string    `toml:"name"`
	URL             string    `toml:"url"`
	ID              int64     `toml:"id"`
	Token           string    `toml:"token"`
	TokenObtainedAt time.Time `toml:"token_obtained_at"`
	TokenExpiresAt  time.Time `toml:"token_expires_at"`
	TLSCAFile       string    `toml:"tls-ca-file"`
	Executor        string    `toml:"executor"`
	BuildsDir       string    `toml:"builds_dir"`
	CacheDir        string    `toml:"cache_dir"`
	Shell           string    `toml:"shell"`
	Docker          *struct {
		Image      string   `toml:"image"`
		Privileged bool     `toml:"privileged"`
		Volumes    []string `toml:"volumes"`
	} `toml:"docker"`
}

// runnerFile is a whole config.toml.
type runnerFile struct {
	Concurrent    int            `toml:"concurrent"`
	CheckInterval int            `toml:"check_interval"`
	LogLevel      string         `toml:"log_level"`
	Runners       []RunnerConfig `toml:"runners"`
}

// DecodeRunnerConfig parses a config.toml strictly (a key gitlab-runner
// does not have is an error) and returns the runner called name, as
// `gitlab-runner run-single --config FILE --runner NAME` picks it.
func DecodeRunnerConfig(data []byte, name string) (RunnerConfig, error) {
	var fc runnerFile
	md, err := toml.Decode(string(data), &fc)
	if err != nil {
		return RunnerConfig{}, fmt.Errorf("loading config: %w", err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return RunnerConfig{}, fmt.Errorf("config: unknown keys %v", und)
	}
	if fc.Concurrent < 1 {
		return RunnerConfig{}, errors.New("config: concurrent must be at least 1")
	}
	for _, r := range fc.Runners {
		if r.Name == name {
			if r.URL == "" || r.Token == "" || r.Executor == "" {
				return r, errors.New("runner config lacks url, token or executor")
			}
			return r, nil
		}
	}
	return RunnerConfig{}, fmt.Errorf("could not find a runner with the name '%s'", name)
}
