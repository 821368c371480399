package config

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Tests of issue 14's "bad input that is accepted" (items 8, 14, 15, 21):
// each input is refused with one line that names the field.

// oneProblem parses text (after the fixture's expansion) and checks that it
// is refused with exactly one line naming field and containing want.
func oneProblem(t *testing.T, f *fixture, text, field, want string) {
	t.Helper()
	_, err := f.parse(text)
	if err == nil {
		t.Fatalf("Parse succeeded; want an error naming %s", field)
	}
	msg := err.Error()
	t.Log(msg)
	if strings.Contains(msg, "\n") {
		t.Fatalf("want one problem on one line, got:\n%s", msg)
	}
	if !strings.HasPrefix(msg, testFile+":") {
		t.Errorf("message does not start with %q:\n%s", testFile+":", msg)
	}
	if field != "" && !strings.Contains(msg, " "+field+": ") {
		t.Errorf("message does not name field %s:\n%s", field, msg)
	}
	if !strings.Contains(msg, want) {
		t.Errorf("message does not contain %q:\n%s", want, msg)
	}
}

// aliasBomb is a 13 KB document in the spirit of billion laughs: one
// pool mapping holding 400 wrong keys, anchored under an unknown key, and
// a pool list of 3,200 aliases to it. Decoded naively, it is 1.3 million
// problems.
func aliasBomb() string {
	var b strings.Builder
	b.WriteString("x: &p {name: a, forge: g")
	for i := range 400 {
		fmt.Fprintf(&b, ", k%d: 0", i)
	}
	b.WriteString("}\npools: [*p")
	b.WriteString(strings.Repeat(",*p", 3199))
	b.WriteString("]\n")
	return b.String()
}

// Item 8: an alias bomb is refused at once, with one line, in bounded
// memory.
func TestAliasBombRefusedQuickly(t *testing.T) {
	doc := aliasBomb()
	if n := len(doc); n < 12<<10 || n > 14<<10 {
		t.Fatalf("test bug: the bomb is %d bytes, want about 13 KB", n)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	_, err := ParseOffline(testFile, []byte(doc))
	took := time.Since(start)
	runtime.ReadMemStats(&after)
	if err == nil {
		t.Fatal("the alias bomb was accepted")
	}
	msg := err.Error()
	if len(msg) > 300 {
		t.Logf("%d bytes, %d lines; first: %.300s", len(msg), strings.Count(msg, "\n")+1, msg)
	} else {
		t.Log(msg)
	}
	if strings.Contains(msg, "\n") || !strings.Contains(msg, "aliases") {
		t.Errorf("want one line about aliases, got %d lines", strings.Count(msg, "\n")+1)
	}
	if took > 500*time.Millisecond {
		t.Errorf("refusing the bomb took %s, want well under a second", took)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20 {
		t.Errorf("refusing the bomb allocated %d MiB, want under 64", alloc>>20)
	}
}

// Item 8: a file far larger than any configuration is refused unread.
func TestHugeFileRefused(t *testing.T) {
	doc := "# " + strings.Repeat("x", 8<<20) + "\n" + minimalYAML
	_, err := ParseOffline(testFile, []byte(doc))
	if err == nil || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("want one line saying the file is too large, got: %v", err)
	}
}

// Item 14: every secret file is refused when group or others may read or
// write it, or when another user than root or the one running owns it.
func TestSecretFilesModeAndOwner(t *testing.T) {
	apiWith := func(keys string) string {
		return replace(t, minimalYAML, "forges:", "api: {"+keys+"}\nforges:")
	}
	secrets := []struct {
		name, text, file, field string
	}{
		{"token_file", minimalYAML, "token", `forges[0] ("gitea").token_file`},
		{"webhook_secret_file", replace(t, gitlabYAML, "token_file: $DIR/token", "token_file: $DIR/token\n    webhook_secret_file: $DIR/hook"),
			"hook", `forges[0] ("gl").webhook_secret_file`},
		{"app_private_key_file", githubYAML, "app.pem", `forges[0] ("gh").app_private_key_file`},
		{"api.tokens_file", apiWith("tokens_file: $DIR/api-tokens"), "api-tokens", "api.tokens_file"},
		{"api.tls_key_file", apiWith("tls_cert_file: $DIR/cert.pem, tls_key_file: $DIR/key.pem"), "key.pem", "api.tls_key_file"},
		{"images.credentials[].password_file",
			replace(t, minimalYAML, "forges:", "images:\n  credentials:\n    - {registry: ghcr.io, username: me, password_file: $DIR/registry-pw}\nforges:"),
			"registry-pw", "images.credentials[0].password_file"},
		{"images.docker_config", replace(t, minimalYAML, "forges:", "images: {docker_config: $DIR/docker.json}\nforges:"),
			"docker.json", "images.docker_config"},
	}
	content := map[string]string{
		"token": testToken, "hook": "hooksecret", "app.pem": string(testKeyPEM()), "api-tokens": "t1\n",
		"key.pem": "key", "registry-pw": "pw", "docker.json": "{}",
	}
	for _, s := range secrets {
		for _, c := range []struct {
			name  string
			mode  os.FileMode
			owner int // -1: the running user
			want  string
		}{
			{"group and others may write (0622)", 0o622, -1, "mode 0622"},
			{"group may write (0620)", 0o620, -1, "mode 0620"},
			{"others may read (0604)", 0o604, -1, "mode 0604"},
			{"owned by another user", 0o600, 4242, "owned by uid 4242"},
		} {
			t.Run(s.name+"/"+c.name, func(t *testing.T) {
				f := newFixture(t)
				f.write("cert.pem", "cert", 0o644)
				f.write(s.file, content[s.file], c.mode)
				// The fixture's own secrets stay valid: only s.file is wrong.
				if c.owner >= 0 {
					if os.Geteuid() != 0 {
						t.Fatal("changing a file's owner needs root: run the tests as root (make test does)")
					}
					if err := os.Chown(f.path(s.file), c.owner, c.owner); err != nil {
						t.Fatal(err)
					}
				}
				oneProblem(t, f, s.text, s.field, c.want)
			})
		}
		t.Run(s.name+"/0600 or 0400 of the running user", func(t *testing.T) {
			for _, mode := range []os.FileMode{0o600, 0o400} {
				f := newFixture(t)
				f.write("cert.pem", "cert", 0o644)
				f.write(s.file, content[s.file], mode)
				f.mustParse(s.text)
			}
		})
	}
}

// Item 15: configurations that cannot work or are dangerous are refused,
// each with one line naming the field.
func TestDangerousValuesRefused(t *testing.T) {
	pool := `pools[0] ("default")`
	tests := []struct {
		name     string
		base     string
		old, new string
		setup    func(f *fixture)
		field    string
		want     string
	}{
		{name: "cidr 0.0.0.0/1", old: "forges:", new: "network: {cidr: 0.0.0.0/1}\nforges:",
			field: "network.cidr", want: "0.0.0.0/1"},
		{name: "cidr too large", old: "forges:", new: "network: {cidr: 10.0.0.0/8}\nforges:",
			field: "network.cidr", want: "/8 is larger than /16"},
		{name: "loopback cidr", old: "forges:", new: "network: {cidr: 127.0.0.0/24}\nforges:",
			field: "network.cidr", want: "loopback"},
		{name: "link-local cidr", old: "forges:", new: "network: {cidr: 169.254.0.0/24}\nforges:",
			field: "network.cidr", want: "link-local"},
		{name: "multicast cidr", old: "forges:", new: "network: {cidr: 224.1.0.0/24}\nforges:",
			field: "network.cidr", want: "multicast"},
		{name: "reserved cidr", old: "forges:", new: "network: {cidr: 240.0.0.0/24}\nforges:",
			field: "network.cidr", want: "reserved"},
		{name: "bridge lo", old: "forges:", new: "network: {bridge: lo}\nforges:",
			field: "network.bridge", want: `"lo" is the loopback interface`},
		{name: "bridge all", old: "forges:", new: "network: {bridge: all}\nforges:",
			field: "network.bridge", want: `"all" is reserved`},
		{name: "max 100000", old: "max: 2", new: "max: 100000",
			field: pool + ".max", want: "100000 is more than 4096"},
		{name: "memory_mib 2^63-1", old: "      kernel:", new: "      memory_mib: 9223372036854775807\n      kernel:",
			field: pool + ".vm.memory_mib", want: "9223372036854775807 is more than 1048576"},
		{name: "disk_mib 2^63-1", old: "root_initramfs: $DIR/root.cpio", new: "root_initramfs: $DIR/root.cpio\n      disk_mib: 9223372036854775807",
			field: pool + ".vm.disk_mib", want: "is more than 16777216"},
		{name: "boot timeout 1ns", old: "max: 2", new: "max: 2\n    timeouts: {boot: 1ns}",
			field: pool + ".timeouts.boot", want: "1ns is less than 10s"},
		{name: "job timeout 1ns", old: "max: 2", new: "max: 2\n    timeouts: {job: 1ns}",
			field: pool + ".timeouts.job", want: "1ns is less than 1m"},
		{name: "relative kernel", old: "kernel: $DIR/vmlinuz-6.6.30", new: "kernel: vmlinuz-6.6.30",
			field: pool + ".vm.kernel", want: `"vmlinuz-6.6.30" is not an absolute path`},
		{name: "relative root_initramfs", old: "root_initramfs: $DIR/root.cpio", new: "root_initramfs: root.cpio",
			field: pool + ".vm.root_initramfs", want: `"root.cpio" is not an absolute path`},
		{name: "relative token_file", old: "token_file: $DIR/token", new: "token_file: token",
			field: `forges[0] ("gitea").token_file`, want: `"token" is not an absolute path`},
		{name: "relative ca_file", old: "token_file: $DIR/token", new: "token_file: $DIR/token\n    ca_file: ca.pem",
			field: `forges[0] ("gitea").ca_file`, want: `"ca.pem" is not an absolute path`},
		{name: "relative modules_dir", old: "      kernel:", new: "      kernel_modules: [overlay]\n      modules_dir: modules/6.6.30\n      kernel:",
			field: pool + ".vm.modules_dir", want: `"modules/6.6.30" is not an absolute path`},
		{name: "relative qemu binary", old: "forges:", new: "vmm: {qemu: {binary: bin/qemu-system-x86_64}}\nforges:",
			field: "vmm.qemu.binary", want: `"bin/qemu-system-x86_64" is neither an absolute path nor a name`},
		{name: "label with a control character", old: "labels: [linux]", new: `labels: ["linux\u0007"]`,
			field: pool + ".labels[0]", want: "control character"},
		{name: "label with an escape sequence", old: "labels: [linux]", new: `labels: ["\e[31mred"]`,
			field: pool + ".labels[0]", want: "control character"},
		{name: "api.listen on every address without TLS", old: "forges:", new: "api: {listen: \"0.0.0.0:8443\", tokens_file: $DIR/token}\nforges:",
			field: "api.listen", want: "0.0.0.0:8443 is not a loopback address and TLS is off"},
		{name: "api.listen on a host name without TLS", old: "forges:", new: "api: {listen: \"ci.example.com:8443\", tokens_file: $DIR/token}\nforges:",
			field: "api.listen", want: "TLS is off"},
		{name: "api.listen with an empty host without TLS", old: "forges:", new: "api: {listen: \":8443\", tokens_file: $DIR/token}\nforges:",
			field: "api.listen", want: "TLS is off"},
		{name: "allow_plaintext without listen", old: "forges:", new: "api: {allow_plaintext: true}\nforges:",
			field: "api.allow_plaintext", want: "only with listen"},
		{name: "gitea label with a colon", old: "labels: [linux]", new: "labels: [\"ubuntu:docker\"]",
			field: pool + ".labels[0]", want: `"ubuntu:docker" contains ':'`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			if tt.setup != nil {
				tt.setup(f)
			}
			base := minimalYAML
			if tt.base != "" {
				base = tt.base
			}
			oneProblem(t, f, replace(t, base, tt.old, tt.new), tt.field, tt.want)
		})
	}
}

// Item 15: what stays allowed next to the new rules.
func TestSafeValuesStillAccepted(t *testing.T) {
	tests := []struct {
		name     string
		base     string
		old, new string
		setup    func(f *fixture)
	}{
		{name: "api.listen on loopback without TLS", old: "forges:", new: "api: {listen: \"127.0.0.1:8443\", tokens_file: $DIR/token}\nforges:"},
		{name: "api.listen on ::1 without TLS", old: "forges:", new: "api: {listen: \"[::1]:8443\", tokens_file: $DIR/token}\nforges:"},
		{name: "api.listen on localhost without TLS", old: "forges:", new: "api: {listen: \"localhost:8443\", tokens_file: $DIR/token}\nforges:"},
		{name: "api.listen on every address with plaintext allowed", old: "forges:", new: "api: {listen: \"0.0.0.0:8443\", tokens_file: $DIR/token, allow_plaintext: true}\nforges:"},
		{name: "api.listen on every address with TLS", old: "forges:",
			new:   "api: {listen: \"0.0.0.0:8443\", tokens_file: $DIR/token, tls_cert_file: $DIR/cert.pem, tls_key_file: $DIR/key.pem}\nforges:",
			setup: func(f *fixture) { f.write("cert.pem", "c", 0o644); f.write("key.pem", "k", 0o600) }},
		{name: "gitlab tag with a colon", base: gitlabYAML, old: "labels: [linux]", new: "labels: [\"os:linux\"]"},
		{name: "github label with a colon", base: githubYAML, old: "labels: [linux]", new: "labels: [\"os:linux\"]"},
		{name: "cidr /16", old: "forges:", new: "network: {cidr: 10.200.0.0/16}\nforges:"},
		{name: "100.64/10 cidr", old: "forges:", new: "network: {cidr: 100.64.0.0/16}\nforges:"},
		{name: "qemu binary by name", old: "forges:", new: "vmm: {qemu: {binary: qemu-kvm}}\nforges:"},
		{name: "max 4096 in a /16", base: replace(t, minimalYAML, "forges:", "network: {cidr: 10.200.0.0/16}\nforges:"), old: "max: 2", new: "max: 4096"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			if tt.setup != nil {
				tt.setup(f)
			}
			base := minimalYAML
			if tt.base != "" {
				base = tt.base
			}
			f.mustParse(replace(t, base, tt.old, tt.new))
		})
	}
}

// Item 21: a network.cidr with fewer guest addresses than the pools' max
// together is refused, naming network.cidr and the pools.
func TestCIDRTooSmallForPools(t *testing.T) {
	f := newFixture(t)
	// A /30 has 4 addresses: the network's, the gateway's and the
	// broadcast address leave 1 for guests.
	text := replace(t, minimalYAML, "forges:", "network: {cidr: 10.0.0.0/30}\nforges:")
	text = replace(t, text, "max: 2", "max: 4")
	oneProblem(t, f, text, "network.cidr", `10.0.0.0/30 has 1 guest address (4 less the network, gateway and broadcast addresses), fewer than the pools' max together: 4 (default 4)`)

	// Two pools of a /29 (5 guest addresses): 3 + 3 do not fit ...
	text = replace(t, minimalYAML, "forges:", "network: {cidr: 10.0.0.0/29}\nforges:") + secondPool + "    max: 3\n"
	text = replace(t, text, "min_idle: 1\n    max: 2", "min_idle: 1\n    max: 3")
	oneProblem(t, f, text, "network.cidr", "10.0.0.0/29 has 5 guest addresses (8 less the network, gateway and broadcast addresses), fewer than the pools' max together: 6 (default 3, small 3)")

	// ... 3 + 2 do, but not when one of them warm-starts: its
	// template's build holds an address too.
	f.mustParse(strings.Replace(text, "    max: 3\n", "    max: 2\n", 1))
	fits := strings.Replace(text, "    max: 3\n", "    max: 2\n", 1)
	warm := replace(t, fits, "min_idle: 1\n    max: 2\n", "min_idle: 1\n    max: 2\n    warm_start: true\n")
	oneProblem(t, f, warm, "network.cidr", "fewer than the pools' max together: 6 (default 2 + 1 for its template, small 3)")
	// The default /24 holds 253.
	f.mustParse(replace(t, minimalYAML, "max: 2", "max: 253"))
	oneProblem(t, f, replace(t, minimalYAML, "max: 2", "max: 254"), "network.cidr", "has 253 guest addresses")
}
