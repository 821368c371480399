package deptest

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// TestREADMEPackageTableMatchesTheTree holds the package table of the
// README's architecture section to the module's tree: every package the
// table names in its first column exists, and every package of the tree
// is named, in the first column or, for one below a named
// package (a double's stand-in commands, its API checker), by its path
// below it in that package's row.
func TestREADMEPackageTableMatchesTheTree(t *testing.T) {
	root := filepath.Join("..", "..")
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	// Every directory of Go files is a package, whatever build tags its
	// files need (e2e, nixcheck): the build's graph would miss those.
	seen := map[string]bool{}
	var pkgs []string
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(d.Name(), ".go") {
			rel, _ := filepath.Rel(root, filepath.Dir(path))
			if rel = filepath.ToSlash(rel); !seen[rel] {
				seen[rel] = true
				pkgs = append(pkgs, rel)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(pkgs) < 30 {
		t.Fatalf("the tree has %d packages: not the module", len(pkgs))
	}
	for _, m := range readmeMismatches(string(readme), pkgs) {
		t.Error(m)
	}
}

// The check finds each way the table can drift: a named package that is
// gone, a package not named, and a package below a named one that its
// row does not mention.
func TestREADMEMismatchesAreFound(t *testing.T) {
	readme := "# x\n\n## Architecture\n\n| package | why |\n|---|---|\n" +
		"| `a`, `a/b` | a and b |\n| `gone` | removed |\n| `d` | d, and its stand-in `cmd/tool` |\n\n## Next\n\n| `e` | not the section |\n"
	got := readmeMismatches(readme, []string{"a", "a/b", "c", "d", "d/cmd/tool", "d/extra", "e"})
	const want = `README architecture table: names package gone, which the tree does not have
README architecture table: package c is not named
README architecture table: package d/extra is not named (nor extra in d's row)
README architecture table: package e is not named`
	sameLines(t, "mismatches", got, strings.Split(want, "\n"))
	if m := readmeMismatches(readme, []string{"a", "a/b", "d", "d/cmd/tool", "gone"}); len(m) != 0 {
		t.Fatalf("a matching table: %q", m)
	}
}

var tableRow = regexp.MustCompile("(?m)^\\| (`[^|]+`) \\|(.*)\\|$")

// readmeMismatches compares the package table of readme's architecture
// section with pkgs, the module's packages by path inside it (the root
// package, if any, is ".").
func readmeMismatches(readme string, pkgs []string) []string {
	section := readme
	if i := strings.Index(section, "\n## Architecture\n"); i >= 0 {
		section = section[i+len("\n## Architecture\n"):]
		if j := strings.Index(section, "\n## "); j >= 0 {
			section = section[:j]
		}
	}
	rows := map[string]string{} // named package -> its row's text
	for _, m := range tableRow.FindAllStringSubmatch(section, -1) {
		for _, name := range strings.Split(m[1], ",") {
			rows[strings.Trim(strings.TrimSpace(name), "`")] = m[2]
		}
	}
	have := map[string]bool{}
	for _, p := range pkgs {
		have[p] = true
	}
	var out []string
	for name := range rows {
		if !have[name] {
			out = append(out, "README architecture table: names package "+name+", which the tree does not have")
		}
	}
	for _, p := range pkgs {
		if _, ok := rows[p]; ok {
			continue
		}
		parent := ""
		for name := range rows {
			if strings.HasPrefix(p, name+"/") && len(name) > len(parent) {
				parent = name
			}
		}
		if parent == "" {
			out = append(out, "README architecture table: package "+p+" is not named")
			continue
		}
		below := strings.TrimPrefix(p, parent+"/")
		if !strings.Contains(rows[parent], below+"`") {
			out = append(out, "README architecture table: package "+p+" is not named (nor "+below+" in "+parent+"'s row)")
		}
	}
	sort.Strings(out)
	return out
}
