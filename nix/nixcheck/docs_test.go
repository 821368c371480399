//go:build nixcheck

package nixcheck

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the generated parts of docs/nixos.md")

// generate renders one generated region of docs/nixos.md: "options", or
// "example-NAME" for nix/examples/NAME.nix as a flake.
func generate(t *testing.T) func(name string) (string, error) {
	var rows map[string][]OptionRow
	eval(t, checks+".optionRows", &rows)
	return func(name string) (string, error) {
		if name == "options" {
			var b bytes.Buffer
			WriteOptions(&b, rows)
			return b.String(), nil
		}
		if ex, ok := strings.CutPrefix(name, "example-"); ok {
			src, err := os.ReadFile(filepath.Join(root, "nix", "examples", ex+".nix"))
			if err != nil {
				return "", err
			}
			return "```nix\n" + Flake(string(src)) + "```\n", nil
		}
		return "", fmt.Errorf("unknown generated region %q", name)
	}
}

// docs/nixos.md's option tables and example flakes are what the modules'
// options and nix/examples make of them.
func TestDocsUpToDate(t *testing.T) {
	path := filepath.Join(root, "docs", "nixos.md")
	have, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want, err := Regenerate(string(have), generate(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, region := range []string{"options", "example-github", "example-gitea-cache", "example-gitlab", "example-multi"} {
		if !strings.Contains(want, "<!-- begin "+region+" -->") {
			t.Errorf("docs/nixos.md has no generated region %s", region)
		}
	}
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if want != string(have) {
		t.Fatal("docs/nixos.md is out of date; run `go test -tags nixcheck ./nix/nixcheck -run TestDocsUpToDate -update`")
	}
}

// Every nix block of docs/nixos.md parses, the example flakes included.
func TestDocsNixBlocksParse(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(root, "docs", "nixos.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```nix\n(.*?)```").FindAllStringSubmatch(string(doc), -1)
	if len(blocks) < 4 {
		t.Fatalf("docs/nixos.md has %d nix blocks, want the four scenarios at least", len(blocks))
	}
	for i, b := range blocks {
		f := filepath.Join(t.TempDir(), fmt.Sprintf("block%d.nix", i))
		if err := os.WriteFile(f, []byte(b[1]), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := nixCmd(t, "nix-instantiate", "--parse", f).CombinedOutput(); err != nil {
			t.Errorf("nix block %d of docs/nixos.md does not parse:\n%s\n%s", i+1, out, b[1])
		}
	}
}
