package config

import (
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

// Each malformed file has exactly one problem, reported on one line that
// starts with the file name (and the line, where the test says so) and
// names the field.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		name     string
		old, new string           // edit of minimalYAML; empty old appends
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
			field: `forges[0] ("gitea").token_file`, want: "is readable by group/other (chmod 600)"},
		{name: "group-readable token file", setup: func(f *fixture) { f.write("token", testToken, 0o640) },
			field: `forges[0] ("gitea").token_file`, want: "is readable by group/other (chmod 600)"},
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
		{name: "bad vmm driver", old: "forges:", new: "vmm: {driver: kvmtool}\nforges:",
			field: "vmm.driver", want: `"kvmtool" is not one of qemu, firecracker`},

		// Forges.
		{name: "bad forge type", old: "type: gitea", new: "type: gogs",
			field: `forges[0] ("gitea").type`, want: `"gogs" is not one of gitea, github, gitlab`},
		{name: "forge URL without scheme", old: "url: https://gitea.example.com", new: "url: gitea.example.com",
			field: `forges[0] ("gitea").url`, want: "not an absolute http(s) URL"},
		{name: "missing ca_file", old: "token_file: $DIR/token", new: "token_file: $DIR/token\n    ca_file: $DIR/ca.pem",
			field: `forges[0] ("gitea").ca_file`, want: "no such file"},
		{name: "duplicate forge name", old: "pools:", new: "  - name: gitea\n    type: gitea\n    url: https://x.example\n    token_file: $DIR/token\npools:",
			field: `forges[1] ("gitea").name`, want: `duplicate forge name "gitea" (also forges[0])`},

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
		{name: "no runner path default for github", old: "type: gitea", new: "type: github",
			field: `pools[0] ("default").runner.path`, want: `must be set: forge type "github" has no default`},
		{name: "fetch_interval too short", old: "max: 2", new: "max: 2\n    runner: {fetch_interval: 10ms}",
			field: `pools[0] ("default").runner.fetch_interval`, want: "10ms is less than 100ms"},
		{name: "zero boot timeout", old: "max: 2", new: "max: 2\n    timeouts: {boot: 0s}",
			field: `pools[0] ("default").timeouts.boot`, want: "0s is not positive"},
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
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "too many values") {
		t.Fatalf("want one problem about too many values, got: %v", err)
	}
}
