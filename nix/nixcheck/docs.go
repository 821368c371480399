package nixcheck

import (
	"fmt"
	"io"
	"regexp"
	"strings"
)

// OptionRow is one option as nix/lib/spec.nix's rows function describes
// it.
type OptionRow struct {
	Name        string `json:"name"`
	Type        string `json:"type"`
	Default     string `json:"default"`
	Description string `json:"description"`
	ReadOnly    bool   `json:"readOnly"`
}

// Modules are the modules in the order docs/nixos.md lists them.
var Modules = []string{"microvm-base", "registry-cache", "fireactions", "fireteact", "fireglab"}

// WriteOptions writes the option reference of the modules: a table per
// module.
func WriteOptions(w io.Writer, rows map[string][]OptionRow) {
	for _, m := range Modules {
		fmt.Fprintf(w, "### `services.%s`\n\n", m)
		fmt.Fprintln(w, "| Option | Type | Default | Description |")
		fmt.Fprintln(w, "|---|---|---|---|")
		for _, r := range rows[m] {
			desc := r.Description
			if r.ReadOnly {
				desc = "Read-only. " + desc
			}
			fmt.Fprintf(w, "| `%s` | %s | %s | %s |\n", r.Name, cell(r.Type), code(r.Default), cell(desc))
		}
		fmt.Fprintln(w)
	}
}

// cell escapes text for a Markdown table cell.
func cell(s string) string {
	return strings.NewReplacer("|", `\|`, "<", "&lt;", ">", "&gt;", "\n", " ").Replace(s)
}

// code renders a default: JSON values as code, descriptions as text.
func code(s string) string {
	if s == "—" {
		return s
	}
	if strings.HasPrefix(s, "{") || strings.HasPrefix(s, "[") || strings.HasPrefix(s, `"`) ||
		s == "true" || s == "false" || s == "null" || regexp.MustCompile(`^-?[0-9]+$`).MatchString(s) {
		return "`" + strings.ReplaceAll(s, "|", `\|`) + "`"
	}
	return cell(s)
}

// Flake wraps an example module (nix/examples/NAME.nix) into a flake a
// reader can copy: the module's text, indented, among the modules of a
// NixOS system.
func Flake(module string) string {
	var b strings.Builder
	b.WriteString(`{
  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    fireactions.url = "github:nixos-fireactions/nixos-fireactions";
    fireactions.inputs.nixpkgs.follows = "nixpkgs";
    sops-nix.url = "github:Mic92/sops-nix";
    sops-nix.inputs.nixpkgs.follows = "nixpkgs";
  };

  outputs = { nixpkgs, fireactions, sops-nix, ... }: {
    nixosConfigurations.ci = nixpkgs.lib.nixosSystem {
      system = "x86_64-linux";
      modules = [
        ./configuration.nix # your host: hardware, users, sops.secrets
        sops-nix.nixosModules.sops
        fireactions.nixosModules.default
        (
`)
	for _, line := range strings.Split(strings.TrimRight(module, "\n"), "\n") {
		if line == "" {
			b.WriteString("\n")
			continue
		}
		b.WriteString("          " + line + "\n")
	}
	b.WriteString(`        )
      ];
    };
  };
}
`)
	return b.String()
}

// region matches a generated region of docs/nixos.md:
// <!-- begin NAME --> ... <!-- end NAME -->.
var region = regexp.MustCompile(`(?s)(<!-- begin ([a-z0-9-]+) -->\n).*?(<!-- end ([a-z0-9-]+) -->)`)

// Regenerate replaces every generated region of doc with gen(NAME).
func Regenerate(doc string, gen func(name string) (string, error)) (string, error) {
	var firstErr error
	out := region.ReplaceAllStringFunc(doc, func(m string) string {
		sub := region.FindStringSubmatch(m)
		if sub[2] != sub[4] {
			if firstErr == nil {
				firstErr = fmt.Errorf("region %q ends as %q", sub[2], sub[4])
			}
			return m
		}
		body, err := gen(sub[2])
		if err != nil && firstErr == nil {
			firstErr = err
		}
		return sub[1] + body + sub[3]
	})
	return out, firstErr
}
