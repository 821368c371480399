package cli

import (
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// A face is this program under another name. The NixOS layer installs it
// as fireactions (GitHub Actions), fireteact (Gitea and Forgejo Actions)
// and fireglab (GitLab CI), each face a symlink to the one binary with its
// own service, state and API socket. The name it is run by (argv[0])
// selects only what the command line assumes: its name in help and the
// API socket the client commands (ps, pools, logs, kill) talk to unless
// told otherwise. The server's settings all come from its configuration
// file.
type face struct {
	name   string
	socket string // the client commands' default --socket
}

// faces are the known faces by program name; any other name is
// fireactions.
var faces = map[string]face{
	"fireactions": {name: "fireactions", socket: defaultSocket},
	"fireteact":   {name: "fireteact", socket: "/run/fireteact/api.sock"},
	"fireglab":    {name: "fireglab", socket: "/run/fireglab/api.sock"},
}

// faceOf is the face of a program run as argv0.
func faceOf(argv0 string) face {
	if f, ok := faces[filepath.Base(argv0)]; ok {
		return f
	}
	return faces["fireactions"]
}

// applyFace renames root and points every --socket default of the tree at
// the face's socket. It returns root.
func applyFace(root *cobra.Command, f face) *cobra.Command {
	root.Use = f.name
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, fs := range []*pflag.FlagSet{c.LocalNonPersistentFlags(), c.PersistentFlags()} {
			if fl := fs.Lookup("socket"); fl != nil {
				fl.DefValue = f.socket
				_ = fl.Value.Set(f.socket)
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	return root
}
