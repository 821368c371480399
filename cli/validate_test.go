package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestValidateExitCodes runs `fireactions validate` on good and bad files:
// a bad file exits non-zero and prints one line per problem naming the
// field; a good file exits 0.
func TestValidateExitCodes(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{"kernel", "root.cpio"} {
		os.WriteFile(filepath.Join(dir, f), nil, 0o644)
	}
	os.WriteFile(filepath.Join(dir, "token"), []byte("secret-token\n"), 0o600)
	good := giteaConfig("/var/lib/fa", "root_initramfs: DIR/root.cpio")
	cases := []struct {
		name, body string
		wantCode   int
		wantField  string
	}{
		{"valid", good, 0, ""},
		{"unknown key", good + "bogus: 1\n", 1, `unknown key "bogus"`},
		{"max below min_idle", strings.Replace(good, "labels: [linux]", "labels: [linux]\n    min_idle: 3\n    max: 2", 1), 1, "max"},
		{"bad cidr", good + "network: {cidr: 10.0.0.0/33}\n", 1, "network.cidr"},
		{"missing token file", strings.Replace(good, "DIR/token", "DIR/nope", 1), 1, "token_file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml")
			os.WriteFile(path, []byte(strings.ReplaceAll(tc.body, "DIR", dir)), 0o600)
			var out, errb bytes.Buffer
			code := Main([]string{"validate", path}, &out, &errb)
			if code != tc.wantCode {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, tc.wantCode, errb.String())
			}
			if tc.wantField != "" && !strings.Contains(errb.String(), tc.wantField) {
				t.Fatalf("stderr does not name %q:\n%s", tc.wantField, errb.String())
			}
			if strings.Contains(errb.String(), "secret-token") {
				t.Fatal("validate printed the token")
			}
		})
	}
}

// giteaConfig is a configuration of one Gitea forge and one pool, with
// DIR standing for a directory holding token, kernel and what vm names.
func giteaConfig(stateDir, vm string) string {
	return `state_dir: ` + stateDir + `
host_id: h
forges: [{name: g, type: gitea, url: "http://127.0.0.1:3000", token_file: DIR/token}]
pools:
  - name: p
    forge: g
    labels: [linux]
    vm: {kernel: DIR/kernel, ` + vm + `}
`
}
