package config

import (
	"strings"
	"testing"
)

// offlineYAML names files that do not exist on this machine (as a NixOS
// build's generated file does: its secrets are systemd credentials of the
// target host) and every key that names a file or a secret.
const offlineYAML = `host_id: test-host
agent_path: /nix/store/x-fireactions/bin/fireactions-agent
api:
  listen: 127.0.0.1:8443
  tokens_file: /run/credentials/fireactions.service/api-tokens
  tls_cert_file: /run/credentials/fireactions.service/api.crt
  tls_key_file: /run/credentials/fireactions.service/api.key
forges:
  - name: gh
    type: github
    app_id: 12345
    app_private_key_file: /run/credentials/fireactions.service/gh-app-key
    webhook_secret_file: /run/credentials/fireactions.service/gh-webhook
    ca_file: /etc/ssl/nonexistent/ca.pem
  - name: gl
    type: gitlab
    url: https://gitlab.example.com
    token_env: GITLAB_TOKEN_NOT_SET_HERE
pools:
  - name: gh
    forge: gh
    scope: org:example
    labels: [linux]
    vm:
      kernel: /nix/store/x-kernel/bzImage
      kernel_modules: [overlay]
      modules_dir: /nix/store/x-kernel/lib/modules/6.6.30
      root_initramfs: /var/lib/fireactions/boot/root.cpio.gz
  - name: gl
    forge: gl
    labels: [linux]
    vm:
      kernel: /nix/store/x-kernel/bzImage
      root_initramfs: /var/lib/fireactions/boot/root.cpio.gz
`

// ParseOffline accepts a file whose files and secrets are elsewhere,
// which Parse rejects for exactly those reasons.
func TestParseOfflineSkipsHostFiles(t *testing.T) {
	c, err := ParseOffline(testFile, []byte(offlineYAML))
	if err != nil {
		t.Fatalf("ParseOffline: %v", err)
	}
	if c.Forges[0].AppPrivateKey != nil || c.Forges[1].Token != "" || c.API.Tokens != nil {
		t.Error("ParseOffline read a secret")
	}
	_, err = Parse(testFile, []byte(offlineYAML), func(string) (string, bool) { return "", false })
	if err == nil {
		t.Fatal("Parse accepted files that do not exist")
	}
	for _, field := range []string{"agent_path", "tokens_file", "tls_cert_file", "app_private_key_file",
		"webhook_secret_file", "ca_file", "token_env", "vm.kernel", "modules_dir", "root_initramfs"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("Parse did not object to %s:\n%v", field, err)
		}
	}
}

// Offline, everything that needs no host is still checked.
func TestParseOfflineStillChecks(t *testing.T) {
	cases := []struct{ name, old, new, want string }{
		{"missing kernel", "kernel: /nix/store/x-kernel/bzImage\n      kernel_modules", "kernel_modules", "vm.kernel: must be set"},
		{"relative agent_path", "agent_path: /nix/store/", "agent_path: nix/store/", "agent_path"},
		{"bad env name", "token_env: GITLAB_TOKEN_NOT_SET_HERE", "token_env: not-a-name", "not an environment variable name"},
		{"token file and env", "token_env: GITLAB_TOKEN_NOT_SET_HERE", "token_env: X\n    token_file: /x", "set only one of token_file and token_env"},
		{"empty secret path", "app_private_key_file: /run/credentials/fireactions.service/gh-app-key", "app_private_key_file: \"\"", "app_private_key_file: must be set"},
		{"tokens_file missing with listen", "  tokens_file: /run/credentials/fireactions.service/api-tokens\n", "", "tokens_file: must be set"},
		{"schema", "labels: [linux]", "labels: [linux]\n    max: 0", "max"},
		{"unknown key", "host_id: test-host", "host_id: test-host\nbogus: 1", `unknown key "bogus"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseOffline(testFile, []byte(replace(t, offlineYAML, tc.old, tc.new)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error with %q, got %v", tc.want, err)
			}
		})
	}
}
