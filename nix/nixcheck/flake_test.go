//go:build nixcheck

package nixcheck

import (
	"os"
	"strings"
	"testing"
)

// flake.nix's outputs, evaluated with stand-ins for its inputs
// (nix/stubs.nix): the outputs the issue asks for exist, every host of the
// registry becomes a NixOS configuration and a Colmena node, and every
// file a node imports exists.
func TestFlakeOutputs(t *testing.T) {
	var f struct {
		Outputs, Modules, Packages, Hosts, Colmena, Checks, Profiles []string
		Imports                                                      map[string][]string
	}
	eval(t, `let f = (import ./nix/stubs.nix).flake; names = builtins.attrNames; in {
	  outputs = names f;
	  modules = names f.nixosModules;
	  packages = names f.packages.x86_64-linux;
	  hosts = names f.nixosConfigurations;
	  colmena = names f.colmena;
	  checks = names f.checks.x86_64-linux;
	  profiles = names f.profiles;
	  imports = builtins.mapAttrs (_: c: map toString (builtins.filter builtins.isPath (builtins.head c.modules).imports)) f.nixosConfigurations;
	}`, &f)
	want := map[string][]string{
		"outputs":  {"checks", "colmena", "colmenaHive", "devShells", "lib", "nixosConfigurations", "nixosModules", "packages", "profiles"},
		"modules":  {"default", "fireactions", "fireglab", "fireteact", "microvm-base", "registry-cache"},
		"packages": {"default", "fireactions", "fireglab", "fireteact", "firecracker-kernel", "firecracker-kernel-custom", "image-azure", "image-qcow2"},
		"hosts":    {"gh-runner-1", "gitea-ci-1", "gl-runner-1", "multi-1"},
		"colmena":  {"gh-runner-1", "gitea-ci-1", "gl-runner-1", "meta", "multi-1"},
		"checks":   {"host-gh-runner-1", "host-gitea-ci-1", "host-gl-runner-1", "host-multi-1", "presets"},
	}
	got := map[string][]string{"outputs": f.Outputs, "modules": f.Modules, "packages": f.Packages, "hosts": f.Hosts, "colmena": f.Colmena, "checks": f.Checks}
	for k, w := range want {
		for _, name := range w {
			if !contains(got[k], name) {
				t.Errorf("flake %s lack %s (have %v)", k, name, got[k])
			}
		}
	}
	if len(f.Profiles) != 16 {
		t.Errorf("profiles has %d profiles: %v", len(f.Profiles), f.Profiles)
	}
	for host, files := range f.Imports {
		if !strings.Contains(strings.Join(files, " "), "/deploy/disko/") {
			t.Errorf("%s imports no disko layout: %v", host, files)
		}
		for _, file := range files {
			if _, err := os.Stat(file); err != nil {
				t.Errorf("%s imports %s: %v", host, file, err)
			}
		}
	}
}
