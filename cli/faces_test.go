package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func TestFaceOf(t *testing.T) {
	for argv0, want := range map[string]string{
		"fireactions":                            "fireactions",
		"/nix/store/abc-fireteact/bin/fireteact": "fireteact",
		"./fireglab":                             "fireglab",
		"/tmp/go-build1/cli.test":                "fireactions",
		"fireteact-wrapped":                      "fireactions",
	} {
		if got := faceOf(argv0).name; got != want {
			t.Errorf("faceOf(%q) = %s, want %s", argv0, got, want)
		}
	}
}

// Under a face, the client commands default to the face's socket and help
// names the face; the server side is untouched.
func TestApplyFaceSocketDefaults(t *testing.T) {
	for _, name := range []string{"fireactions", "fireteact", "fireglab"} {
		t.Run(name, func(t *testing.T) {
			f := faces[name]
			root := applyFace(Root(), f)
			var found int
			var walk func(c *cobra.Command)
			walk = func(c *cobra.Command) {
				if fl := c.Flags().Lookup("socket"); fl != nil {
					found++
					if fl.DefValue != f.socket || fl.Value.String() != f.socket {
						t.Errorf("%s --socket default %q (value %q), want %q", c.CommandPath(), fl.DefValue, fl.Value, f.socket)
					}
				}
				for _, s := range c.Commands() {
					walk(s)
				}
			}
			walk(root)
			if found < 4 { // ps, logs, kill and pools' subcommands
				t.Fatalf("only %d commands take --socket", found)
			}
			var out bytes.Buffer
			root.SetOut(&out)
			root.SetArgs([]string{"--help"})
			if err := root.Execute(); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out.String(), name+" [command]") {
				t.Errorf("help does not name %s:\n%s", name, out.String())
			}
		})
	}
}
