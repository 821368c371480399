//go:build e2e

package e2e

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/initramfs"
)

// TestSecretScanSeesRunnerFiles: a secret planted in a runner file (the
// way a driver hands the guest its runner's credential: base64 in the
// agent's JSON config, inside a newc archive) and in the runner's
// environment (JSON-escaped) is found by the scan, though neither is in
// the archive as plain text.
func TestSecretScanSeesRunnerFiles(t *testing.T) {
	dir := t.TempDir()
	inFile, inEnv := "planted-"+randHex(t), "planted-<&>-"+randHex(t)
	raw, err := os.ReadFile(plantedInitramfs(t, dir, inFile, "SECRET="+inEnv))
	if err != nil {
		t.Fatal(err)
	}
	for what, s := range map[string]string{"runner file": inFile, "environment": inEnv} {
		if bytes.Contains(raw, []byte(s)) {
			t.Fatalf("the %s secret is plain text in the archive: the plant tests no decoding", what)
		}
		if !bytes.Contains(visibleBytes(raw), []byte(s)) {
			t.Errorf("the secret planted in the %s is not found by the scan", what)
		}
	}
}

// plantedInitramfs writes, through the host's own code path, a VM
// initramfs whose runner has secret in a runner file and env in its
// environment, as a driver that leaked it would: the positive control of
// a secret scan.
func plantedInitramfs(t *testing.T, dir, secret string, env ...string) string {
	t.Helper()
	pool := filepath.Join(dir, "empty-pool.cpio")
	if err := os.WriteFile(pool, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := agentproto.Config{VMID: "planted", Runner: agentproto.Runner{
		Forge: "test", User: "runner", UID: 1000, GID: 1000, Home: "/home/runner", Env: env,
		Command: []string{"/bin/runner"},
		Files:   []agentproto.File{{Path: "/home/runner/.runner", Mode: 0o600, Content: []byte(`{"uuid":"u","token":"` + strings.TrimSpace(secret) + `"}`)}},
	}}
	dst := filepath.Join(dir, "planted.cpio")
	if err := initramfs.WriteVM(dst, pool, cfg); err != nil {
		t.Fatal(err)
	}
	return dst
}

// guestVisible returns every byte a guest can see in an initramfs file,
// decoded as far as the host encodes what it hands a guest: see
// visibleBytes.
func guestVisible(t *testing.T, path string) []byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return visibleBytes(raw)
}

// visibleBytes is the raw archive, each gzip member decompressed, and
// then, in up to three rounds over what the previous round added: JSON
// strings with escapes unescaped (the agent's config is JSON; Go escapes
// <, > and & in it) and base64 runs decoded (runner files travel base64
// in the config, and a runner's own files may hold base64 again), with
// gzip members inside decoded data decompressed too.
func visibleBytes(raw []byte) []byte {
	all := append([]byte(nil), raw...)
	layer := gunzipMembers(raw)
	all = append(all, layer...)
	layer = append(append([]byte(nil), raw...), layer...)
	for round := 0; round < 3 && len(layer) > 0; round++ {
		next := append(jsonEscapedStrings(layer), base64Runs(layer)...)
		next = append(next, gunzipMembers(next)...)
		all = append(all, next...)
		layer = next
	}
	return all
}

// gunzipMembers decompresses every gzip member found in b, each followed
// by a newline.
func gunzipMembers(b []byte) []byte {
	var out []byte
	for off := 0; ; {
		i := bytes.Index(b[off:], []byte{0x1f, 0x8b, 0x08})
		if i < 0 {
			return out
		}
		if zr, err := gzip.NewReader(bytes.NewReader(b[off+i:])); err == nil {
			zr.Multistream(false)
			if d, err := io.ReadAll(zr); err == nil || len(d) > 0 {
				out = append(append(out, d...), '\n')
			}
		}
		off += i + 3
	}
}

// jsonEscapedStrings unquotes every JSON string in b that holds an
// escape (the others read the same raw).
func jsonEscapedStrings(b []byte) []byte {
	var out []byte
	for i := 0; i < len(b); i++ {
		if b[i] != '"' {
			continue
		}
		escaped, end := false, -1
		for j := i + 1; j < len(b) && j < i+1<<20; j++ {
			if b[j] == '\\' {
				escaped = true
				j++
				continue
			}
			if b[j] == '"' {
				end = j
				break
			}
			if b[j] == '\n' {
				break
			}
		}
		if end < 0 {
			continue
		}
		if escaped {
			var s string
			if json.Unmarshal(b[i:end+1], &s) == nil {
				out = append(append(out, s...), '\n')
			}
		}
		i = end
	}
	return out
}

// base64Runs decodes every run of at least 16 base64 characters in b
// (standard or URL alphabet, padded or not), each followed by a newline.
func base64Runs(b []byte) []byte {
	const minRun = 16
	var out []byte
	isB64 := func(c byte) bool {
		return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '-' || c == '_'
	}
	for i := 0; i < len(b); {
		if !isB64(b[i]) {
			i++
			continue
		}
		j := i
		for j < len(b) && isB64(b[j]) {
			j++
		}
		run := b[i:j]
		for j < len(b) && b[j] == '=' {
			j++
		}
		if len(run) >= minRun {
			out = append(append(out, decodeBase64(run)...), '\n')
		}
		i = j
	}
	return out
}

// decodeBase64 decodes run in the standard or URL alphabet; a run whose
// length leaves a lone character is not base64 as a whole, so then only
// its whole groups of four are.
func decodeBase64(run []byte) []byte {
	for _, r := range [][]byte{run, run[:len(run)/4*4]} {
		for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
			if d, err := enc.DecodeString(string(r)); err == nil {
				return d
			}
		}
	}
	return nil
}
