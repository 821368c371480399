package imagestore

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
)

// Credential is a registry's (or mirror's) username and password.
type Credential struct {
	Registry string // host[:port]; "docker.io" for Docker Hub
	Username string
	Password string
}

// keychain answers with the configured credentials first, then those of a
// Docker config file, else anonymous. Credential helpers (credsStore,
// credHelpers) are not run: the orchestrator takes secrets from files.
type keychain struct {
	creds map[string]authn.AuthConfig
}

// NewKeychain builds the registry keychain from explicit credentials and
// a Docker config.json ("" for none). A credential for a registry wins
// over the config file's.
func NewKeychain(dockerConfig string, creds []Credential) (authn.Keychain, error) {
	k := keychain{creds: map[string]authn.AuthConfig{}}
	if dockerConfig != "" {
		b, err := os.ReadFile(dockerConfig)
		if err != nil {
			return nil, fmt.Errorf("imagestore: docker config: %w", err)
		}
		var f struct {
			Auths map[string]authn.AuthConfig `json:"auths"`
		}
		if err := json.Unmarshal(b, &f); err != nil {
			return nil, fmt.Errorf("imagestore: docker config %s: %w", dockerConfig, err)
		}
		for host, a := range f.Auths {
			k.creds[configKey(host)] = a
		}
	}
	for _, c := range creds {
		k.creds[RegistryKey(c.Registry)] = authn.AuthConfig{Username: c.Username, Password: c.Password}
	}
	return k, nil
}

// configKey turns a Docker config "auths" key ("https://index.docker.io/v1/",
// "ghcr.io", "http://host:5000") into a registry key.
func configKey(s string) string {
	if strings.Contains(s, "://") {
		if u, err := url.Parse(s); err == nil {
			s = u.Host
		}
	}
	s, _, _ = strings.Cut(s, "/")
	return RegistryKey(s)
}

// Resolve implements authn.Keychain.
func (k keychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	if a, ok := k.creds[RegistryKey(r.RegistryStr())]; ok {
		return authn.FromConfig(a), nil
	}
	return authn.Anonymous, nil
}
