package config

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"testing"
)

// secondPool is a valid pool to append to minimalYAML.
const secondPool = `  - name: small
    forge: gitea
    labels: [tiny]
    vm:
      kernel: $DIR/vmlinuz-6.6.30
      root_initramfs: $DIR/root.cpio
`

// pemBlock is one PEM block of type typ holding data.
func pemBlock(typ string, data []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: data}))
}

// ed25519KeyPEM is a valid private key that GitHub Apps cannot use.
func ed25519KeyPEM(t *testing.T) string {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pemBlock("PRIVATE KEY", der)
}

// Each malformed file has exactly one problem, reported on one line that
// starts with the file name (and the line, where the test says so) and
// names the field.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		name     string
		base     string           // the configuration to edit; minimalYAML when empty
		old, new string           // edit of base; empty old appends
		setup    func(f *fixture) // changes to the fixture's files and environment
		field    string           // the field path the message names
		want     string           // more of the message
		at       string           // when set, the message points at the line holding this text
		is       error            // when set, errors.Is(err, is) holds
	}{
		// The YAML itself.
		{name: "empty file", old: minimalYAML, new: "", want: "empty file"},
		{name: "only comments", old: minimalYAML, new: "# nothing yet\n", want: "empty file"},
		{name: "two documents", old: "", new: "---\nhost_id: other\n", want: "more than one YAML document", at: "---"},
		{name: "syntax error", old: "max: 2", new: "max: [2", want: fmt.Sprintf("%s:", testFile)},
		{name: "unknown top-level key", old: "forges:", new: "colour: blue\nforges:",
			want: `unknown key "colour"`, at: "colour:"},
		{name: "unknown key in pools[0].vm", old: "      kernel:", new: "      vcpu: 2\n      kernel:",
			want: `unknown key "vcpu" in pools[0].vm (did you mean "vcpus"?)`, at: "vcpu:"},
		{name: "key set twice", old: "max: 2", new: "max: 2\n    max: 3",
			field: "pools[0].max", want: "set more than once", at: "max: 3"},
		{name: "string for an integer", old: "max: 2", new: "max: abc",
			field: "pools[0].max", want: `cannot parse "abc" as an integer`, at: "max: abc"},
		{name: "float for an integer", old: "max: 2", new: "max: 2.5",
			field: "pools[0].max", want: `cannot parse "2.5" as an integer`, at: "max: 2.5"},
		{name: "bad duration", old: "max: 2", new: "max: 2\n    timeouts:\n      boot: 90",
			field: "pools[0].timeouts.boot", want: `cannot parse "90" as a duration`, at: "boot: 90"},
		{name: "string for a boolean", old: "forges:", new: "network: {nat: yes}\nforges:",
			field: "network.nat", want: "as a boolean", at: "nat: yes"},
		{name: "scalar for a list", old: "labels: [linux]", new: "labels: linux",
			field: "pools[0].labels", want: `expected a list, found "linux"`, at: "labels: linux"},
		{name: "list for a mapping", old: "forges:", new: "log: [info]\nforges:",
			field: "log", want: "expected a mapping, found a list", at: "log:"},

		// Secrets.
		{name: "missing token file", setup: func(f *fixture) { os.Remove(f.path("token")) },
			field: `forges[0] ("gitea").token_file`, want: "no such file", is: fs.ErrNotExist},
		{name: "world-readable token file", setup: func(f *fixture) { f.write("token", testToken, 0o604) },
			field: `forges[0] ("gitea").token_file`, want: "group/other may read or write it (chmod 600)"},
		{name: "group-readable token file", setup: func(f *fixture) { f.write("token", testToken, 0o640) },
			field: `forges[0] ("gitea").token_file`, want: "group/other may read or write it (chmod 600)"},
		{name: "blank token file", setup: func(f *fixture) { f.write("token", " \n", 0o600) },
			field: `forges[0] ("gitea").token_file`, want: "is empty"},
		{name: "token_env unset", old: "token_file: $DIR/token", new: "token_env: GITEA_TOKEN",
			field: `forges[0] ("gitea").token_env`, want: "environment variable GITEA_TOKEN is not set"},
		{name: "token_env empty", old: "token_file: $DIR/token", new: "token_env: GITEA_TOKEN",
			setup: func(f *fixture) { f.env["GITEA_TOKEN"] = "  " },
			field: `forges[0] ("gitea").token_env`, want: "environment variable GITEA_TOKEN is empty"},
		{name: "token_file and token_env", old: "token_file: $DIR/token", new: "token_file: $DIR/token\n    token_env: GITEA_TOKEN",
			setup: func(f *fixture) { f.env["GITEA_TOKEN"] = testToken },
			field: `forges[0] ("gitea")`, want: "set only one of token_file and token_env"},
		{name: "neither token_file nor token_env", old: "    token_file: $DIR/token\n", new: "",
			field: `forges[0] ("gitea")`, want: "set one of token_file and token_env"},

		// Top level, network, vmm.
		{name: "relative state_dir", old: "forges:", new: "state_dir: var/fa\nforges:",
			field: "state_dir", want: "not an absolute path", at: "state_dir:"},
		{name: "bad host_id", old: "host_id: test-host", new: "host_id: Test_Host",
			field: "host_id", want: `"Test_Host" is not a host id`, at: "host_id:"},
		{name: "bad log level", old: "forges:", new: "log: {level: loud}\nforges:",
			field: "log.level", want: `"loud" is not one of debug, info, warn, error`},
		{name: "bridge name too long", old: "forges:", new: "network: {bridge: fireactions-bridge0}\nforges:",
			field: "network.bridge", want: "longer than 15 bytes"},
		{name: "bad CIDR", old: "forges:", new: "network:\n  cidr: 10.200.0.0/33\nforges:",
			field: "network.cidr", want: "is not an IPv4 prefix", at: "cidr:"},
		{name: "allowed port out of range", old: "forges:", new: "network: {allow_tcp_ports: [3000, 70000]}\nforges:",
			field: "network.allow_tcp_ports[1]", want: "70000"},
		{name: "negative connection rate", old: "forges:", new: "network: {new_conn_per_second: -1}\nforges:",
			field: "network.new_conn_per_second", want: "-1"},
		{name: "IPv6 CIDR", old: "forges:", new: "network: {cidr: \"fd00::/64\"}\nforges:",
			field: "network.cidr", want: "is not an IPv4 prefix"},
		{name: "CIDR too small", old: "forges:", new: "network: {cidr: 10.0.0.0/31}\nforges:",
			field: "network.cidr", want: "at most /30"},
		{name: "CIDR with host bits", old: "forges:", new: "network: {cidr: 10.0.0.1/24}\nforges:",
			field: "network.cidr", want: "did you mean 10.0.0.0/24?"},
		{name: "gateway outside cidr", old: "forges:", new: "network: {gateway: 10.9.9.1}\nforges:",
			field: "network.gateway", want: "10.9.9.1 is not in network.cidr 10.200.0.0/24"},
		{name: "gateway is the broadcast address", old: "forges:", new: "network: {gateway: 10.200.0.255}\nforges:",
			field: "network.gateway", want: "broadcast address"},
		{name: "bad dns entry", old: "forges:", new: "network: {dns: [1.1.1.1, dns.google]}\nforges:",
			field: "network.dns[1]", want: `"dns.google" is not an IP address`},
		{name: "mtu too small", old: "forges:", new: "network: {mtu: 500}\nforges:",
			field: "network.mtu", want: "500 is not between 576 and 9000"},
		{name: "bad drain_grace", old: "forges:", new: "drain_grace: 0s\nforges:",
			field: "drain_grace", want: "0s is not positive", at: "drain_grace:"},
		{name: "drain_grace not a duration", old: "forges:", new: "drain_grace: 10\nforges:",
			field: "drain_grace", want: `cannot parse "10" as a duration`},
		{name: "reconcile_interval too small", old: "forges:", new: "reconcile_interval: 100ms\nforges:",
			field: "reconcile_interval", want: "100ms is less than 200ms", at: "reconcile_interval:"},
		{name: "relative agent_path", old: "forges:", new: "agent_path: bin/fireactions-agent\nforges:",
			field: "agent_path", want: `"bin/fireactions-agent" is not an absolute path`},
		{name: "missing agent_path", old: "forges:", new: "agent_path: $DIR/fireactions-agent\nforges:",
			field: "agent_path", want: "fireactions-agent: no such file", is: fs.ErrNotExist},
		{name: "negative console_logs.keep", old: "forges:", new: "console_logs: {keep: -1h}\nforges:",
			field: "console_logs.keep", want: "-1h is negative"},
		{name: "console_logs.keep_max_mib of 0", old: "forges:", new: "console_logs: {keep_max_mib: 0}\nforges:",
			field: "console_logs.keep_max_mib", want: "between 1 and 1048576"},
		{name: "relative api.socket", old: "forges:", new: "api: {socket: api.sock}\nforges:",
			field: "api.socket", want: `"api.sock" is not an absolute path`},
		{name: "api.socket too long", old: "forges:", new: "api: {socket: /run/" + strings.Repeat("x", 110) + "}\nforges:",
			field: "api.socket", want: "longer than 107 bytes"},
		{name: "api.listen without tokens_file", old: "forges:", new: "api:\n  listen: 127.0.0.1:8443\nforges:",
			field: "api.tokens_file", want: "must be set when listen is", at: "api:"},
		{name: "api.listen without a port", old: "forges:", new: "api: {listen: localhost, tokens_file: $DIR/token}\nforges:",
			field: "api.listen", want: `"localhost" is not a host:port`},
		{name: "world-readable api.tokens_file", old: "forges:", new: "api: {tokens_file: $DIR/api-tokens}\nforges:",
			setup: func(f *fixture) { f.write("api-tokens", "t1\n", 0o644) },
			field: "api.tokens_file", want: "group/other may read or write it (chmod 600)"},
		{name: "api.tokens_file without tokens", old: "forges:", new: "api: {tokens_file: $DIR/api-tokens}\nforges:",
			setup: func(f *fixture) { f.write("api-tokens", "# none yet\n\n", 0o600) },
			field: "api.tokens_file", want: "holds no token"},
		{name: "api.tokens_file line with a space", old: "forges:", new: "api: {tokens_file: $DIR/api-tokens}\nforges:",
			setup: func(f *fixture) { f.write("api-tokens", "t1\nt2 t3\n", 0o600) },
			field: "api.tokens_file", want: "line 2 of " /* the path follows */},
		{name: "tls cert without key", old: "forges:", new: "api:\n  tls_cert_file: $DIR/cert.pem\nforges:",
			setup: func(f *fixture) { f.write("cert.pem", "", 0o644) },
			field: "api.tls_key_file", want: "must be set with tls_cert_file", at: "api:"},
		{name: "tls key without cert", old: "forges:", new: "api: {tls_key_file: $DIR/key.pem}\nforges:",
			setup: func(f *fixture) { f.write("key.pem", "", 0o600) },
			field: "api.tls_cert_file", want: "must be set with tls_key_file"},
		{name: "missing tls cert", old: "forges:", new: "api: {tls_cert_file: $DIR/cert.pem, tls_key_file: $DIR/key.pem}\nforges:",
			setup: func(f *fixture) { f.write("key.pem", "", 0o600) },
			field: "api.tls_cert_file", want: "cert.pem: no such file", is: fs.ErrNotExist},
		{name: "metrics.listen port out of range", old: "forges:", new: "metrics: {listen: \"127.0.0.1:99999\"}\nforges:",
			field: "metrics.listen", want: `port "99999" in "127.0.0.1:99999" is not a number between 1 and 65535`},
		{name: "metrics.listen only a port", old: "forges:", new: "metrics: {listen: 9464}\nforges:",
			field: "metrics.listen", want: `"9464" is not a host:port`},
		{name: "metrics.listen is api.listen", old: "forges:", new: "api: {listen: \"127.0.0.1:9464\", tokens_file: $DIR/token}\nforges:",
			field: "metrics.listen", want: "127.0.0.1:9464 is also api.listen"},
		{name: "metrics.listen bad host", old: "forges:", new: "metrics: {listen: \"my host:9464\"}\nforges:",
			field: "metrics.listen", want: `"my host" in "my host:9464" is not an IP address or host name`},
		{name: "bad vmm driver", old: "forges:", new: "vmm: {driver: kvmtool}\nforges:",
			field: "vmm.driver", want: `"kvmtool" is not one of qemu, firecracker`},

		// Forges.
		{name: "bad forge type", old: "type: gitea", new: "type: gogs",
			field: `forges[0] ("gitea").type`, want: `"gogs" is not one of gitea, github, gitlab`},
		{name: "forge URL without scheme", old: "url: https://gitea.example.com", new: "url: gitea.example.com",
			field: `forges[0] ("gitea").url`, want: "not an absolute http(s) URL"},
		{name: "forge URL with a password", old: "url: https://gitea.example.com", new: "url: https://oauth2:s3cret@gitea.example.com",
			field: `forges[0] ("gitea").url`, want: `"https://gitea.example.com" holds a user or password`},
		{name: "guest URL with a user", old: "url: https://gitea.example.com", new: "url: https://gitea.example.com\n    guest_url: https://bot@10.0.0.1:3000",
			field: `forges[0] ("gitea").guest_url`, want: `"https://10.0.0.1:3000" holds a user or password`},
		{name: "missing ca_file", old: "token_file: $DIR/token", new: "token_file: $DIR/token\n    ca_file: $DIR/ca.pem",
			field: `forges[0] ("gitea").ca_file`, want: "no such file"},
		{name: "duplicate forge name", old: "pools:", new: "  - name: gitea\n    type: gitea\n    url: https://x.example\n    token_file: $DIR/token\npools:",
			field: `forges[1] ("gitea").name`, want: `duplicate forge name "gitea" (also forges[0])`},

		{name: "gitea without url", old: "    url: https://gitea.example.com\n", new: "",
			field: `forges[0] ("gitea").url`, want: "must be set"},
		{name: "world-readable webhook secret", base: gitlabYAML, old: "token_file: $DIR/token", new: "token_file: $DIR/token\n    webhook_secret_file: $DIR/hook",
			setup: func(f *fixture) { f.write("hook", "hooksecret", 0o644) },
			field: `forges[0] ("gl").webhook_secret_file`, want: "group/other may read or write it (chmod 600)"},
		{name: "missing webhook secret", base: gitlabYAML, old: "token_file: $DIR/token", new: "token_file: $DIR/token\n    webhook_secret_file: $DIR/hook",
			field: `forges[0] ("gl").webhook_secret_file`, want: "hook: no such file", is: fs.ErrNotExist},
		{name: "gitea with app_id", old: "token_file: $DIR/token", new: "token_file: $DIR/token\n    app_id: 1",
			field: `forges[0] ("gitea").app_id`, want: "is only for github forges (GitHub App authentication), not gitea", at: "app_id:"},
		{name: "gitea with installation_id", old: "token_file: $DIR/token", new: "token_file: $DIR/token\n    installation_id: 7",
			field: `forges[0] ("gitea").installation_id`, want: "is only for github forges"},
		{name: "gitlab with app_private_key_file", base: gitlabYAML, old: "token_file: $DIR/token", new: "token_file: $DIR/token\n    app_private_key_file: $DIR/app.pem",
			field: `forges[0] ("gl").app_private_key_file`, want: "is only for github forges (GitHub App authentication), not gitlab"},
		{name: "gitlab without a token", base: gitlabYAML, old: "    token_file: $DIR/token\n", new: "",
			field: `forges[0] ("gl")`, want: "set one of token_file and token_env"},
		{name: "github with both app and token", base: githubYAML, old: "    app_id:", new: "    token_file: $DIR/token\n    app_id:",
			field: `forges[0] ("gh")`, want: "set either app_id and app_private_key_file (a GitHub App) or one of token_file and token_env (a personal access token), not both"},
		{name: "github with neither app nor token", base: githubYAML, old: "    app_id: 12345\n    app_private_key_file: $DIR/app.pem\n", new: "",
			field: `forges[0] ("gh")`, want: "set app_id and app_private_key_file (a GitHub App) or one of token_file and token_env"},
		{name: "app_id without key", base: githubYAML, old: "    app_private_key_file: $DIR/app.pem\n", new: "",
			field: `forges[0] ("gh").app_private_key_file`, want: "must be set with app_id"},
		{name: "key without app_id", base: githubYAML, old: "    app_id: 12345\n", new: "",
			field: `forges[0] ("gh").app_id`, want: "must be set with app_private_key_file"},
		{name: "negative app_id", base: githubYAML, old: "app_id: 12345", new: "app_id: -5",
			field: `forges[0] ("gh").app_id`, want: "-5 is negative", at: "app_id:"},
		{name: "app_id not an integer", base: githubYAML, old: "app_id: 12345", new: "app_id: my-app",
			field: `forges[0].app_id`, want: `cannot parse "my-app" as an integer`, at: "app_id:"},
		{name: "app_id too large", base: githubYAML, old: "app_id: 12345", new: "app_id: 99999999999999999999",
			field: `forges[0].app_id`, want: "as an integer"},
		{name: "installation_id without app", base: githubYAML,
			old: "    app_id: 12345\n    app_private_key_file: $DIR/app.pem\n", new: "    token_file: $DIR/token\n    installation_id: 42\n",
			field: `forges[0] ("gh").installation_id`, want: "only with app_id (a GitHub App)", at: "installation_id:"},
		{name: "negative installation_id", base: githubYAML, old: "app_id: 12345", new: "app_id: 12345\n    installation_id: -1",
			field: `forges[0] ("gh").installation_id`, want: "-1 is negative"},
		{name: "private key not PEM", base: githubYAML, setup: func(f *fixture) { f.write("app.pem", "not a key\n", 0o600) },
			field: `forges[0] ("gh").app_private_key_file`, want: "is not PEM", at: "app_private_key_file:"},
		{name: "private key is a certificate", base: githubYAML,
			setup: func(f *fixture) { f.write("app.pem", pemBlock("CERTIFICATE", []byte{1, 2, 3}), 0o600) },
			field: `forges[0] ("gh").app_private_key_file`, want: `holds a PEM "CERTIFICATE" block, not RSA PRIVATE KEY or PRIVATE KEY`},
		{name: "private key block corrupt", base: githubYAML,
			setup: func(f *fixture) { f.write("app.pem", pemBlock("RSA PRIVATE KEY", []byte{1, 2, 3}), 0o600) },
			field: `forges[0] ("gh").app_private_key_file`, want: "does not parse as a PKCS #1 key"},
		{name: "private key not RSA", base: githubYAML, setup: func(f *fixture) { f.write("app.pem", ed25519KeyPEM(f.t), 0o600) },
			field: `forges[0] ("gh").app_private_key_file`, want: "does not hold an RSA key"},
		{name: "group-readable private key", base: githubYAML, setup: func(f *fixture) { f.write("app.pem", string(testKeyPEM()), 0o640) },
			field: `forges[0] ("gh").app_private_key_file`, want: "group/other may read or write it (chmod 600)"},
		{name: "github url not http", base: githubYAML, old: "type: github", new: "type: github\n    url: ghe.example.com/api/v3",
			field: `forges[0] ("gh").url`, want: "not an absolute http(s) URL"},

		// Pools.
		{name: "no pools", old: minimalYAML[strings.Index(minimalYAML, "pools:"):], new: "",
			field: "pools", want: "at least one pool is required"},
		{name: "empty pool list", old: minimalYAML[strings.Index(minimalYAML, "pools:"):], new: "pools: []\n",
			field: "pools", want: "at least one pool is required", at: "pools: []"},
		{name: "duplicate pool name", old: "", new: strings.Replace(secondPool, "small", "default", 1),
			field: `pools[1] ("default").name`, want: `duplicate pool name "default" (also pools[0])`},
		{name: "bad pool name", old: "name: default", new: "name: Default",
			field: `pools[0] ("Default").name`, want: `"Default" is not a pool name`},
		{name: "pool refers to an unknown forge", old: "forge: gitea", new: "forge: codeberg",
			field: `pools[0] ("default").forge`, want: `no forge named "codeberg" in forges`},
		{name: "bad scope", old: "max: 2", new: "max: 2\n    scope: team:core",
			field: `pools[0] ("default").scope`, want: `"team:core" is not a scope`},
		{name: "repo scope without owner", old: "max: 2", new: "max: 2\n    scope: repo:widgets",
			field: `pools[0] ("default").scope`, want: "does not name a repository"},
		{name: "scope kind wrong for github", base: githubYAML, old: "scope: org:acme", new: "scope: instance",
			field: `pools[0] ("default").scope`, at: "scope:",
			want: `"instance" is not a scope of a github forge (org:NAME, repo:OWNER/NAME or enterprise:NAME)`},
		{name: "github scope left out", base: githubYAML, old: "    scope: org:acme\n", new: "",
			field: `pools[0] ("default").scope`, want: `"instance" is not a scope of a github forge`},
		{name: "scope kind wrong for gitea", old: "max: 2", new: "max: 2\n    scope: group:acme",
			field: `pools[0] ("default").scope`, want: `"group:acme" is not a scope of a gitea forge (instance, org:NAME or repo:OWNER/NAME)`},
		{name: "scope kind wrong for gitlab", base: gitlabYAML, old: "scope: project:acme/tools/widgets", new: "scope: repo:acme/widgets",
			field: `pools[0] ("default").scope`, want: `"repo:acme/widgets" is not a scope of a gitlab forge (instance, group:PATH or project:PATH)`},
		{name: "project scope without a namespace", base: gitlabYAML, old: "scope: project:acme/tools/widgets", new: "scope: project:widgets",
			field: `pools[0] ("default").scope`, want: "does not name a project"},
		{name: "enterprise scope with a path", base: githubYAML, old: "scope: org:acme", new: "scope: enterprise:acme/x",
			field: `pools[0] ("default").scope`, want: "does not name an enterprise"},
		{name: "repos on a gitea pool", old: "labels: [linux]", new: "labels: [linux]\n    repos: [acme/widgets]",
			field: `pools[0] ("default").repos`, want: "is only for github pools, not gitea", at: "repos:"},
		{name: "repos on a gitlab pool", base: gitlabYAML, old: "labels: [linux]", new: "labels: [linux]\n    repos: [acme/widgets]",
			field: `pools[0] ("default").repos`, want: "is only for github pools, not gitlab"},
		{name: "repos on a repo pool", base: githubYAML, old: "scope: org:acme", new: "scope: repo:acme/widgets",
			field: `pools[0] ("default").repos`, want: "only with an org or enterprise scope (scope repo:acme/widgets polls its own repository)"},
		{name: "bad repo name", base: githubYAML, old: "repos: [acme/widgets]", new: "repos: [acme/widgets, widgets]",
			field: `pools[0] ("default").repos[1]`, want: `"widgets" is not a repository (OWNER/NAME)`},
		{name: "nested repo name", base: githubYAML, old: "repos: [acme/widgets]", new: "repos: [acme/tools/widgets]",
			field: `pools[0] ("default").repos[0]`, want: `"acme/tools/widgets" is not a repository (OWNER/NAME)`},
		{name: "empty repo name", base: githubYAML, old: "repos: [acme/widgets]", new: "repos: [\"\"]",
			field: `pools[0] ("default").repos[0]`, want: "is empty"},
		{name: "duplicate repo", base: githubYAML, old: "repos: [acme/widgets]", new: "repos: [acme/widgets, acme/widgets]",
			field: `pools[0] ("default").repos[1]`, want: `duplicate repository "acme/widgets" (also pools[0] ("default").repos[0])`},
		{name: "no labels", old: "    labels: [linux]\n", new: "",
			field: `pools[0] ("default").labels`, want: "at least one label is required"},
		{name: "label with a space", old: "labels: [linux]", new: "labels: [linux, ubuntu latest]",
			field: `pools[0] ("default").labels[1]`, want: "contains a space or a comma"},
		{name: "duplicate label", old: "labels: [linux]", new: "labels: [linux, linux]",
			field: `pools[0] ("default").labels[1]`, want: `duplicate label "linux" (also pools[0] ("default").labels[0])`},
		{name: "negative min_idle", old: "min_idle: 1", new: "min_idle: -1",
			field: `pools[0] ("default").min_idle`, want: "-1 is negative", at: "min_idle:"},
		{name: "max below min_idle", old: "min_idle: 1", new: "min_idle: 3",
			field: `pools[0] ("default").max`, want: "2 is less than min_idle 3", at: "max: 2"},
		{name: "max zero", old: "min_idle: 1\n    max: 2", new: "min_idle: 0\n    max: 0",
			field: `pools[0] ("default").max`, want: "0 is less than 1"},
		{name: "too many vcpus", old: "      kernel:", new: "      vcpus: 64\n      kernel:",
			field: `pools[0] ("default").vm.vcpus`, want: "64 is not between 1 and 32"},
		{name: "missing kernel file", setup: func(f *fixture) { os.Remove(f.path("vmlinuz-6.6.30")) },
			field: `pools[0] ("default").vm.kernel`, want: "vmlinuz-6.6.30: no such file", is: fs.ErrNotExist, at: "kernel:"},
		{name: "kernel is a directory", old: "$DIR/vmlinuz-6.6.30", new: "$DIR/modules",
			field: `pools[0] ("default").vm.kernel`, want: "is not a regular file"},
		{name: "no root_initramfs", old: "      root_initramfs: $DIR/root.cpio\n", new: "",
			field: `pools[0] ("default").vm.root_initramfs`, want: "must be set"},
		{name: "modules without a derivable modules_dir", old: "$DIR/vmlinuz-6.6.30", new: "$DIR/root.cpio\n      kernel_modules: [overlay]",
			field: `pools[0] ("default").vm.modules_dir`, want: `kernel file name "root.cpio" does not say the version`},
		{name: "modules with a missing modules_dir", old: "      kernel:", new: "      kernel_modules: [overlay]\n      kernel:",
			field: `pools[0] ("default").vm.modules_dir`, want: "/lib/modules/6.6.30: no such file", at: "vm:"},
		{name: "empty module name", old: "      kernel:", new: "      kernel_modules: [\"\"]\n      modules_dir: $DIR/modules/6.6.30\n      kernel:",
			field: `pools[0] ("default").vm.kernel_modules[0]`, want: "is empty"},
		{name: "runner uid 0", old: "max: 2", new: "max: 2\n    runner: {uid: 0}",
			field: `pools[0] ("default").runner.uid`, want: "0 is root; runners are unprivileged"},
		{name: "bad runner user", old: "max: 2", new: "max: 2\n    runner: {user: Runner}",
			field: `pools[0] ("default").runner.user`, want: `"Runner" is not a user name`},
		{name: "relative runner path", old: "max: 2", new: "max: 2\n    runner: {path: act_runner}",
			field: `pools[0] ("default").runner.path`, want: `"act_runner" is not an absolute path`},
		{name: "runner gid out of range", old: "max: 2", new: "max: 2\n    runner: {gid: 70000}",
			field: `pools[0] ("default").runner.gid`, want: "70000 is not between 1 and 65534"},
		{name: "runner.group on a gitlab pool", base: gitlabYAML, old: "max: 2", new: "max: 2\n    runner:\n      group: ci",
			field: `pools[0] ("default").runner.group`, want: "is only for github pools, not gitlab", at: "group: ci"},
		{name: "runner.group on a gitea pool", old: "max: 2", new: "max: 2\n    runner: {group: ci}",
			field: `pools[0] ("default").runner.group`, want: "is only for github pools, not gitea"},
		{name: "runner.group with a newline", base: githubYAML, old: "max: 2", new: "max: 2\n    runner: {group: \"ci\\nx\"}",
			field: `pools[0] ("default").runner.group`, want: "is not a runner group name"},
		{name: "runner.executor on a github pool", base: githubYAML, old: "max: 2", new: "max: 2\n    runner: {executor: shell}",
			field: `pools[0] ("default").runner.executor`, want: "is only for gitlab pools, not github"},
		{name: "runner.run_untagged on a gitea pool", old: "max: 2", new: "max: 2\n    runner: {run_untagged: true}",
			field: `pools[0] ("default").runner.run_untagged`, want: "is only for gitlab pools, not gitea"},
		{name: "runner.locked on a github pool", base: githubYAML, old: "max: 2", new: "max: 2\n    runner: {locked: false}",
			field: `pools[0] ("default").runner.locked`, want: "is only for gitlab pools, not github"},
		{name: "runner.access_level on a gitea pool", old: "max: 2", new: "max: 2\n    runner: {access_level: ref_protected}",
			field: `pools[0] ("default").runner.access_level`, want: "is only for gitlab pools, not gitea"},
		{name: "runner.maximum_timeout on a github pool", base: githubYAML, old: "max: 2", new: "max: 2\n    runner: {maximum_timeout: 1h}",
			field: `pools[0] ("default").runner.maximum_timeout`, want: "is only for gitlab pools, not github"},
		{name: "maximum_timeout 5m", base: gitlabYAML, old: "max: 2", new: "max: 2\n    runner:\n      maximum_timeout: 5m",
			field: `pools[0] ("default").runner.maximum_timeout`, want: "5m is less than 10m, GitLab's minimum (0: none)", at: "maximum_timeout:"},
		{name: "bad executor", base: gitlabYAML, old: "max: 2", new: "max: 2\n    runner: {executor: kubernetes}",
			field: `pools[0] ("default").runner.executor`, want: `"kubernetes" is not one of auto, shell, docker`},
		{name: "bad default image", base: gitlabYAML, old: "max: 2", new: "max: 2\n    runner: {default_image: \"alpine latest\"}",
			field: `pools[0] ("default").runner.default_image`, want: `not an image name`},
		{name: "bad access_level", base: gitlabYAML, old: "max: 2", new: "max: 2\n    runner: {access_level: protected}",
			field: `pools[0] ("default").runner.access_level`, want: `"protected" is not one of not_protected, ref_protected`},
		{name: "fetch_interval too short", old: "max: 2", new: "max: 2\n    runner: {fetch_interval: 10ms}",
			field: `pools[0] ("default").runner.fetch_interval`, want: "10ms is less than 100ms"},
		{name: "zero boot timeout", old: "max: 2", new: "max: 2\n    timeouts: {boot: 0s}",
			field: `pools[0] ("default").timeouts.boot`, want: "0s is less than 10s"},
		{name: "negative idle timeout", old: "max: 2", new: "max: 2\n    timeouts: {idle: -1m}",
			field: `pools[0] ("default").timeouts.idle`, want: "-1m is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			if tt.setup != nil {
				tt.setup(f)
			}
			text := minimalYAML
			if tt.base != "" {
				text = tt.base
			}
			if tt.old != "" || tt.new != "" {
				text = replace(t, text, tt.old, tt.new)
			}
			_, err := f.parse(text)
			if err == nil {
				t.Fatalf("Parse succeeded; want an error naming %q", tt.field)
			}
			msg := err.Error()
			t.Log(msg)
			if strings.Contains(msg, "\n") {
				t.Fatalf("want one problem on one line, got:\n%s", msg)
			}
			prefix := testFile + ":"
			if tt.at != "" {
				prefix = fmt.Sprintf("%s:%d: ", testFile, lineOf(t, f.expand(text), tt.at))
			}
			if !strings.HasPrefix(msg, prefix) {
				t.Errorf("message does not start with %q:\n%s", prefix, msg)
			}
			if tt.field != "" && !strings.Contains(msg, " "+tt.field+": ") {
				t.Errorf("message does not name field %s:\n%s", tt.field, msg)
			}
			if !strings.Contains(msg, tt.want) {
				t.Errorf("message does not contain %q:\n%s", tt.want, msg)
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Errorf("errors.As(err, *FieldError) is false")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("errors.Is(err, %v) is false", tt.is)
			}
		})
	}
}

// A file with several problems reports all of them, one line each, in
// the schema's order.
func TestParseReportsEveryProblem(t *testing.T) {
	f := newFixture(t)
	text := minimalYAML
	text = replace(t, text, "forges:", "log: {level: loud}\nforges:")
	text = replace(t, text, "min_idle: 1", "min_idle: 3")
	text = replace(t, text, "max: 2", "max: 2\n    runner: {uid: 0}")
	_, err := f.parse(text)
	if err == nil {
		t.Fatal("Parse succeeded")
	}
	lines := strings.Split(err.Error(), "\n")
	want := []string{"log.level", `pools[0] ("default").max`, `pools[0] ("default").runner.uid`}
	if len(lines) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%s", len(lines), len(want), err)
	}
	for i, field := range want {
		if !strings.HasPrefix(lines[i], testFile+":") || !strings.Contains(lines[i], " "+field+": ") {
			t.Errorf("problem %d is %q, want one about %s", i+1, lines[i], field)
		}
	}
}

// Problems with the YAML itself are all reported too, before validation.
func TestParseReportsEveryDecodingProblem(t *testing.T) {
	f := newFixture(t)
	text := replace(t, minimalYAML, "max: 2", "max: many\n    colour: red")
	text = replace(t, text, "forges:", "sate_dir: /x\nforges:")
	_, err := f.parse(text)
	if err == nil {
		t.Fatal("Parse succeeded")
	}
	got := err.Error()
	for _, want := range []string{
		fmt.Sprintf(`%s:%d: unknown key "sate_dir" (did you mean "state_dir"?)`, testFile, lineOf(t, text, "sate_dir")),
		fmt.Sprintf(`%s:%d: pools[0].max: cannot parse "many" as an integer`, testFile, lineOf(t, text, "max: many")),
		fmt.Sprintf(`%s:%d: unknown key "colour" in pools[0]`, testFile, lineOf(t, text, "colour")),
	} {
		if !strings.Contains(got, want+"\n") && !strings.HasSuffix(got, want) {
			t.Errorf("missing line %q in:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "\n") + 1; n != 3 {
		t.Errorf("got %d problems, want 3:\n%s", n, got)
	}
}

// Aliases cannot make decoding do unbounded work.
func TestAliasesAreBounded(t *testing.T) {
	f := newFixture(t)
	labels := strings.Repeat("a,", 1000)
	text := replace(t, minimalYAML, "  - name: default", "  - &p\n    name: default")
	text = replace(t, text, "labels: [linux]", "labels: ["+labels+"b]")
	text += strings.Repeat("  - *p\n", 200)
	_, err := f.parse(text)
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "aliases expand the document to more than 100000 values") {
		t.Fatalf("want one problem about too many values, got: %v", err)
	}
}
