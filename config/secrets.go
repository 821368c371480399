package config

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"syscall"
	"unicode"
)

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Token errors say where a token was looked for, never what it is.

// readToken reads a forge's API token from exactly one of token_file and
// token_env. On failure it names the key at fault ("" for the forge as a
// whole).
//
// readFile and readEnv read a token from a file and from an environment
// variable (readTokenFile and readTokenEnv, or their offline stand-ins).
func readToken(fo *Forge, readFile, readEnv func(string) (string, error)) (token, key string, err error) {
	switch {
	case fo.TokenFile != "" && fo.TokenEnv != "":
		return "", "", errors.New("set only one of token_file and token_env")
	case fo.TokenFile != "":
		token, err = readFile(fo.TokenFile)
		return token, "token_file", err
	case fo.TokenEnv != "":
		token, err = readEnv(fo.TokenEnv)
		return token, "token_env", err
	}
	return "", "", errors.New("set one of token_file and token_env")
}

// readTokenFile reads a token from a file only its owner may read.
func readTokenFile(path string) (string, error) {
	data, err := readSecretFile(path)
	if err != nil {
		return "", err
	}
	return checkToken(string(data), path)
}

// readSecretFile reads a secret file (see secretFile).
func readSecretFile(path string) ([]byte, error) {
	if err := secretFile(path); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, pathError(path, err)
	}
	return data, nil
}

// secretFile accepts the absolute path of a regular file (or a link to
// one) that only its owner may read or write, owned by root or by the user
// running fireactions: a secret anyone else may read leaks, and one
// anyone else may write (a tokens_file at 0622, or a file another user
// owns and can chmod) lets them add credentials.
func secretFile(path string) error {
	if err := absolute(path); err != nil {
		return err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return pathError(path, err)
	}
	if !fi.Mode().IsRegular() {
		return errorf("%s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return errorf("%s has mode %04o: group/other may read or write it (chmod 600)", path, perm)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		uid, me := int(st.Uid), os.Geteuid()
		if uid != 0 && uid != me {
			running := "root, the user running fireactions"
			if me != 0 {
				running = fmt.Sprintf("root or uid %d, the user running fireactions", me)
			}
			return errorf("%s is owned by uid %d, not %s (chown)", path, uid, running)
		}
	}
	return nil
}

// readPrivateKeyFile reads a GitHub App's private key: a file only its
// owner may read, whose first PEM block is an RSA private key, PKCS #1
// ("RSA PRIVATE KEY", as GitHub hands them out) or PKCS #8 ("PRIVATE
// KEY"). It returns the whole file.
func readPrivateKeyFile(path string) ([]byte, error) {
	data, err := readSecretFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errorf("%s is not PEM (want an RSA PRIVATE KEY or PRIVATE KEY block)", path)
	}
	switch block.Type {
	case "RSA PRIVATE KEY":
		if _, err := x509.ParsePKCS1PrivateKey(block.Bytes); err != nil {
			return nil, errorf("%s: the RSA PRIVATE KEY block does not parse as a PKCS #1 key", path)
		}
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, errorf("%s: the PRIVATE KEY block does not parse as a PKCS #8 key", path)
		}
		if _, ok := k.(*rsa.PrivateKey); !ok {
			return nil, errorf("%s does not hold an RSA key but a %T (GitHub Apps sign with RS256)", path, k)
		}
	default:
		return nil, errorf("%s holds a PEM %q block, not RSA PRIVATE KEY or PRIVATE KEY", path, block.Type)
	}
	return data, nil
}

// readTokensFile reads bearer tokens, one a line, from a file only its
// owner may read. Blank lines and lines starting with '#' are skipped.
func readTokensFile(path string) ([]string, error) {
	data, err := readSecretFile(path)
	if err != nil {
		return nil, err
	}
	var tokens []string
	for i, line := range strings.Split(string(data), "\n") {
		t := strings.TrimSpace(line)
		switch {
		case t == "" || strings.HasPrefix(t, "#"):
			continue
		case strings.ContainsFunc(t, unicode.IsSpace):
			return nil, errorf("line %d of %s holds a space: want one token a line", i+1, path)
		}
		tokens = append(tokens, t)
	}
	if len(tokens) == 0 {
		return nil, errorf("%s holds no token", path)
	}
	return tokens, nil
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

// redact replaces any secret a message happens to contain (say, a token
// also pasted into another key) with "[redacted]": the forges' tokens and
// webhook secrets and the API's tokens. Such a problem loses its wrapped
// error, which would still hold the secret.
func redact(errs []error, c *Config) {
	var secrets []string
	for _, fo := range c.Forges {
		secrets = append(secrets, fo.Token, fo.WebhookSecret)
	}
	secrets = append(secrets, c.API.Tokens...)
	for _, rc := range c.Images.Credentials {
		secrets = append(secrets, rc.Password)
	}
	hide := func(s string) string {
		for _, secret := range secrets {
			if secret != "" {
				s = strings.ReplaceAll(s, secret, "[redacted]")
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
