package config

import (
	"errors"
	"os"
)

// LoadOffline reads the configuration file at path and checks it like
// Load, without this host's files and environment. See ParseOffline.
func LoadOffline(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &FieldError{File: path, Err: errorOnly(err)}
	}
	return ParseOffline(path, data)
}

// ParseOffline checks a configuration written for another machine, as a
// NixOS build does with the file it generates: everything Parse checks,
// except what needs that machine's files and environment. Keys naming a
// file (the kernel, the guest root, secrets, agent_path, ca_file, TLS
// files, modules_dir) must still be set where required and absolute where
// the schema says so, but nothing is opened or read; token_env names are
// checked, not looked up. The Config it returns holds no secrets and is
// not fit to serve from.
func ParseOffline(name string, data []byte) (*Config, error) {
	return parse(name, data, nil, true)
}

// The validator's access to the host: the rule or reader itself, or,
// offline, only the checks that need no file system or environment.

func (v *validator) existingFile(p string) error {
	if v.offline {
		return absolute(p)
	}
	return existingFile(p)
}

func (v *validator) existingDir(p string) error {
	if v.offline {
		return absolute(p)
	}
	return existingDir(p)
}

func (v *validator) secretFile(p string) error {
	if v.offline {
		return absolute(p)
	}
	return secretFile(p)
}

func (v *validator) absoluteFile(p string) error {
	if v.offline {
		return absolute(p)
	}
	return absoluteFile(p)
}

func (v *validator) readTokenFile(p string) (string, error) {
	if v.offline {
		return "", absolute(p)
	}
	return readTokenFile(p)
}

func (v *validator) readTokensFile(p string) ([]string, error) {
	if v.offline {
		return nil, absolute(p)
	}
	return readTokensFile(p)
}

func (v *validator) readPrivateKeyFile(p string) ([]byte, error) {
	if v.offline {
		return nil, absolute(p)
	}
	return readPrivateKeyFile(p)
}

func (v *validator) readTokenEnv(name string) (string, error) {
	if v.offline {
		if !envName.MatchString(name) {
			return "", errors.New("is not an environment variable name")
		}
		return "", nil
	}
	return readTokenEnv(name, v.env)
}
