package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// `validate --offline` accepts a file whose kernel, guest root and token
// are on another machine (as a NixOS build checks the file it generates),
// which plain validate rejects; both reject a schema error.
func TestValidateOffline(t *testing.T) {
	dir := t.TempDir()
	good := `host_id: h
forges: [{name: g, type: gitea, url: "http://127.0.0.1:3000", token_file: /run/credentials/fireteact.service/g-token}]
pools:
  - name: p
    forge: g
    labels: [linux]
    vm: {kernel: /nix/store/none/bzImage, root_initramfs: /nix/store/none/root.cpio.gz}
`
	cases := []struct {
		name, body string
		offline    bool
		wantCode   int
		wantErr    string
	}{
		{"offline accepts", good, true, 0, ""},
		{"online rejects missing files", good, false, 1, "token_file"},
		{"offline still checks the schema", strings.Replace(good, "labels: [linux]", "labels: []", 1), true, 1, "labels"},
		{"offline still checks paths are set", strings.Replace(good, "/nix/store/none/bzImage", `""`, 1), true, 1, "vm.kernel: must be set"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".json")
			if err := os.WriteFile(path, []byte(tc.body), 0o600); err != nil {
				t.Fatal(err)
			}
			args := []string{"validate", path}
			if tc.offline {
				args = []string{"validate", "--offline", path}
			}
			var out, errb bytes.Buffer
			if code := Main(args, &out, &errb); code != tc.wantCode {
				t.Fatalf("exit %d, want %d; stderr:\n%s", code, tc.wantCode, errb.String())
			}
			if !strings.Contains(errb.String(), tc.wantErr) {
				t.Fatalf("stderr lacks %q:\n%s", tc.wantErr, errb.String())
			}
		})
	}
}
