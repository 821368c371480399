package config

import (
	"errors"
	"os"
)

// Load reads, completes and validates the configuration file at path,
// taking token_env secrets from the process environment. See Parse.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &FieldError{File: path, Err: errorOnly(err)}
	}
	return Parse(path, data, os.LookupEnv)
}

// Parse decodes the YAML configuration in data, fills what it leaves out
// from Defaults, PoolDefaults and the derived defaults (host_id, gateway,
// dns, a github forge's url, guest_url, modules_dir, runner.path,
// runner.gid and a gitlab pool's runner.locked, access_level and
// executor), reads the secrets (each forge's token into Forge.Token,
// token_env through env; a GitHub App's key into Forge.AppPrivateKey; the
// webhook secret into Forge.WebhookSecret; the API's bearer tokens into
// API.Tokens) and validates the result.
//
// name is the file name errors start with. Parse reports every problem it
// finds, one line each, as FieldErrors joined with errors.Join. Problems
// with the YAML itself (syntax, unknown keys, wrong types) stop it before
// defaults and validation. No message contains a secret.
func Parse(name string, data []byte, env func(string) (string, bool)) (*Config, error) {
	return parse(name, data, env, false)
}

// parse is Parse; offline, it touches neither files nor the environment
// (see ParseOffline).
func parse(name string, data []byte, env func(string) (string, bool), offline bool) (*Config, error) {
	cfg := Defaults()
	pos, err := decodeFile(name, data, &cfg)
	if err != nil {
		return nil, err
	}
	hostname, _ := os.Hostname()
	deriveDefaults(&cfg, hostname)
	v := &validator{file: name, pos: pos, env: env, offline: offline}
	v.config(&cfg)
	if len(v.errs) > 0 {
		redact(v.errs, &cfg)
		return nil, errors.Join(v.errs...)
	}
	return &cfg, nil
}
