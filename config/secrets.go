package config

import (
	"errors"
	"os"
	"regexp"
	"strings"
)

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Token errors say where a token was looked for, never what it is.

// readToken reads a forge's API token from exactly one of token_file and
// token_env. On failure it names the key at fault ("" for the forge as a
// whole).
func readToken(fo *Forge, env func(string) (string, bool)) (token, key string, err error) {
	switch {
	case fo.TokenFile != "" && fo.TokenEnv != "":
		return "", "", errors.New("set only one of token_file and token_env")
	case fo.TokenFile != "":
		token, err = readTokenFile(fo.TokenFile)
		return token, "token_file", err
	case fo.TokenEnv != "":
		token, err = readTokenEnv(fo.TokenEnv, env)
		return token, "token_env", err
	}
	return "", "", errors.New("set one of token_file and token_env")
}

// readTokenFile reads a token from a file only its owner may read.
func readTokenFile(path string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", pathError(path, err)
	}
	if !fi.Mode().IsRegular() {
		return "", errorf("%s is not a regular file", path)
	}
	if fi.Mode().Perm()&0o044 != 0 {
		return "", errorf("%s is readable by group/other (chmod 600)", path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", pathError(path, err)
	}
	return checkToken(string(data), path)
}

// readTokenEnv reads a token from an environment variable.
func readTokenEnv(name string, env func(string) (string, bool)) (string, error) {
	if !envName.MatchString(name) {
		// Not quoted: it may be a token pasted into the wrong key.
		return "", errors.New("is not an environment variable name")
	}
	v, ok := env(name)
	if !ok {
		return "", errorf("environment variable %s is not set", name)
	}
	return checkToken(v, "environment variable "+name)
}

// checkToken trims a token and rejects an empty or multi-line one.
func checkToken(raw, from string) (string, error) {
	t := strings.TrimSpace(raw)
	switch {
	case t == "":
		return "", errorf("%s is empty", from)
	case strings.ContainsAny(t, "\r\n"):
		return "", errorf("%s holds more than one line", from)
	}
	return t, nil
}

// redact replaces any token a message happens to contain (say, a token
// also pasted into another key) with "[redacted]". Such a problem loses
// its wrapped error, which would still hold the token.
func redact(errs []error, forges []Forge) {
	hide := func(s string) string {
		for _, fo := range forges {
			if fo.Token != "" {
				s = strings.ReplaceAll(s, fo.Token, "[redacted]")
			}
		}
		return s
	}
	for _, e := range errs {
		if fe, ok := e.(*FieldError); ok {
			fe.Field = hide(fe.Field)
			if msg := hide(fe.Err.Error()); msg != fe.Err.Error() {
				fe.Err = errors.New(msg)
			}
		}
	}
}
