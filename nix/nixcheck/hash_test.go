//go:build nixcheck

package nixcheck

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// vendorHash runs scripts/vendor-hash.sh with args; it returns the exit
// code and the combined output.
func vendorHash(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(root, "scripts", "vendor-hash.sh"), args...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	} else if err != nil {
		t.Fatalf("scripts/vendor-hash.sh %v: %v", args, err)
	}
	return 0, string(out)
}

// copyModule copies the module's go.mod, go.sum and Go files (what `go
// mod vendor` reads) to a new temporary directory.
func copyModule(t *testing.T) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if d.IsDir() || !(strings.HasSuffix(p, ".go") || d.Name() == "go.mod" || d.Name() == "go.sum") {
			return nil
		}
		rel, _ := filepath.Rel(root, p)
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(dst, filepath.Dir(rel)), 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

var sriHash = regexp.MustCompile(`sha256-[A-Za-z0-9+/]{43}=`)

// The vendorHash of nix/packages/fireactions.nix is the hash of what `go
// mod vendor` makes of go.mod and go.sum; a changed dependency, or a
// different hash in the file, makes the check fail naming both hashes.
func TestVendorHashMatchesGoSum(t *testing.T) {
	pkg := filepath.Join(root, "nix", "packages", "fireactions.nix")
	code, out := vendorHash(t, "--check", pkg)
	if code != 0 {
		t.Fatalf("scripts/vendor-hash.sh --check nix/packages/fireactions.nix: exit %d\n%s", code, out)
	}
	good := sriHash.FindString(out)
	if good == "" {
		t.Fatalf("no SRI hash printed:\n%s", out)
	}

	t.Run("dependency changed", func(t *testing.T) {
		mod := copyModule(t)
		// A replace directive is a change of dependencies that needs no
		// download: vendor/modules.txt records it.
		dep := firstRequirement(t, filepath.Join(mod, "go.mod"))
		edit := exec.Command("go", "mod", "edit", "-replace="+dep+"="+dep)
		edit.Dir = mod
		edit.Env = append(os.Environ(), "GOTOOLCHAIN=local", "GOFLAGS=")
		if out, err := edit.CombinedOutput(); err != nil {
			t.Fatalf("go mod edit: %v\n%s", err, out)
		}
		code, out := vendorHash(t, "--check", pkg, mod)
		if code != 1 || !strings.Contains(out, good) || len(sriHash.FindAllString(out, -1)) != 2 {
			t.Fatalf("go.mod with %s replaced: exit %d, want 1 naming both hashes:\n%s", dep, code, out)
		}
		t.Logf("caught: %s", strings.TrimSpace(out))
	})

	t.Run("other hash in the file", func(t *testing.T) {
		data, err := os.ReadFile(pkg)
		if err != nil {
			t.Fatal(err)
		}
		other := "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
		bad := filepath.Join(t.TempDir(), "fireactions.nix")
		os.WriteFile(bad, []byte(strings.Replace(string(data), good, other, 1)), 0o644)
		code, out := vendorHash(t, "--check", bad)
		if code != 1 || !strings.Contains(out, good) || !strings.Contains(out, other) || !strings.Contains(out, bad) {
			t.Fatalf("a wrong vendorHash: exit %d, want 1 naming the file and both hashes:\n%s", code, out)
		}
	})
}

// firstRequirement is the first module path@version of go.mod's require
// block.
func firstRequirement(t *testing.T, gomod string) string {
	t.Helper()
	data, err := os.ReadFile(gomod)
	if err != nil {
		t.Fatal(err)
	}
	in := false
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "require (":
			in = true
		case in && line == ")":
			in = false
		case in && line != "" && !strings.HasPrefix(line, "//"):
			f := strings.Fields(line)
			return f[0] + "@" + f[1]
		}
	}
	t.Fatalf("%s requires nothing", gomod)
	return ""
}

var (
	fakeHashRef = regexp.MustCompile(`\bfake(Hash|Sha256|Sha512)\b`)
	aaaaHash    = regexp.MustCompile(`\bsha(1|256|512)[-:]A{8,}`)
	// An attribute whose name says it holds a hash, set to a string.
	hashAttr = regexp.MustCompile(`\b([A-Za-z0-9_]*(?:[Hh]ash|[Ss]ha1|[Ss]ha256|[Ss]ha512))\s*=\s*"([^"]*)"`)
	algo     = regexp.MustCompile(`^(?:sha1|sha256|sha512)[-:]`)
)

// placeholderHashes lists, as file:line: why, every placeholder hash of a
// .nix file: lib.fakeHash and its kin, an "sha256-AAAA…" hash, and a hash
// attribute that is empty or all zeros (hex or base32 zeros, base64 As).
// Comment lines are not read.
func placeholderHashes(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var found []string
	s := bufio.NewScanner(f)
	for n := 1; s.Scan(); n++ {
		line := s.Text()
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		at := fmt.Sprintf("%s:%d", path, n)
		if m := fakeHashRef.FindString(line); m != "" {
			found = append(found, at+": "+m)
		}
		if m := aaaaHash.FindString(line); m != "" {
			found = append(found, at+": "+m+"…")
		}
		for _, m := range hashAttr.FindAllStringSubmatch(line, -1) {
			v := strings.TrimRight(algo.ReplaceAllString(m[2], ""), "=")
			switch {
			case m[2] == "":
				found = append(found, at+": "+m[1]+" is empty")
			case strings.Trim(v, "0") == "" || strings.Trim(v, "A") == "":
				found = append(found, at+": "+m[1]+" is all zeros ("+m[2]+")")
			}
		}
	}
	return found, s.Err()
}

// No .nix file of the repository holds a placeholder hash.
func TestNoPlaceholderHash(t *testing.T) {
	var found []string
	files := 0
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(p, ".nix") {
			return nil
		}
		files++
		f, err := placeholderHashes(p)
		found = append(found, f...)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 30 {
		t.Fatalf("found only %d .nix files under %s", files, root)
	}
	if len(found) > 0 {
		t.Fatalf("placeholder hashes:\n%s", strings.ReplaceAll(strings.Join(found, "\n"), root+"/", ""))
	}
	t.Logf("%d .nix files, no placeholder hash", files)
}

// The placeholder check catches each kind, and leaves real hashes, null,
// store paths and comments alone.
func TestPlaceholderHashCaught(t *testing.T) {
	bad := map[string]string{
		"lib.fakeHash":   `  vendorHash = lib.fakeHash;`,
		"fakeSha256":     `  sha256 = lib.fakeSha256;`,
		"fakeSha512":     `  sha512 = fakeSha512;`,
		"AAAA":           `  hash = "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";`,
		"empty":          `  cargoHash = "";`,
		"zero base32":    `  sha256 = "0000000000000000000000000000000000000000000000000000";`,
		"zero hex":       `  outputHash = "sha256:0000000000000000000000000000000000000000000000000000000000000000";`,
		"AAAA elsewhere": `  x = { h = "sha512-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="; };`,
	}
	dir := t.TempDir()
	for name, line := range bad {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".nix")
		os.WriteFile(p, []byte("{ lib }: {\n"+line+"\n}\n"), 0o644)
		found, err := placeholderHashes(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(found) == 0 || !strings.Contains(found[0], p+":2:") {
			t.Errorf("%s: %q not caught (%v)", name, line, found)
		}
	}
	good := filepath.Join(dir, "good.nix")
	os.WriteFile(good, []byte(`{ lib }: {
  vendorHash = "sha256-YnYxG1xy1n8h7lfibB68P5uDSgylcurK8fpmrrdguPk=";
  cargoHash = null;
  agent = "/nix/store/00000000000000000000000000000000-agent";
  # lib.fakeHash in a comment is prose.
}
`), 0o644)
	if found, _ := placeholderHashes(good); len(found) > 0 {
		t.Errorf("real hashes flagged: %v", found)
	}
}
