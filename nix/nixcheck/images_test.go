//go:build nixcheck

package nixcheck

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// imageModulesPath is a stand-in for nixpkgs' nixos/modules (and
// nixos/lib beside it) holding only what images/*.nix import: an empty
// qemu-guest profile, azure-image.nix reduced to its vmGeneration option
// (type and default as nixpkgs declares it) and its image, and
// make-disk-image.nix returning its arguments, refusing any nixpkgs'
// make-disk-image.nix does not take.
func imageModulesPath(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"modules/profiles/qemu-guest.nix": `{ }`,
		"modules/virtualisation/azure-image.nix": `{ config, lib, ... }: {
		  options.virtualisation.azureImage.vmGeneration = lib.mkOption { type = lib.types.enum [ "v1" "v2" ]; default = "v1"; };
		  config.system.build.azureImage = { nixpkgsAzureImage = config.virtualisation.azureImage.vmGeneration; };
		}`,
		// The parameters of nixpkgs' nixos/lib/make-disk-image.nix.
		"lib/make-disk-image.nix": `args:
		  let known = [ "pkgs" "lib" "config" "diskSize" "additionalSpace" "bootSize" "contents" "partitionTableType"
		    "installBootLoader" "fsType" "label" "configFile" "postVM" "onlyNixStore" "name" "baseName" "format"
		    "copyChannel" "additionalPaths" "touchEFIVars" "OVMF" "efiFirmware" "efiVariables" "memSize" "deterministic" ];
		    unknown = builtins.filter (a: !builtins.elem a known) (builtins.attrNames args);
		  in if unknown != [ ] then throw "make-disk-image.nix takes no \${toString unknown}"
		  else { makeDiskImage = builtins.removeAttrs args [ "config" "lib" "pkgs" ]; }`,
	}
	for name, text := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "modules")
}

// evalImage evaluates images/<name>.nix with nixpkgs' lib.evalModules
// against the NixOS options it sets, declared with nixpkgs' types.
func evalImage(t *testing.T, name string, v any) {
	t.Helper()
	eval(t, `let
	  lib = `+libExpr(t)+`;
	  inherit (lib) mkOption types;
	  opt = type: default: mkOption { inherit type default; };
	  decls = {
	    options.services.microvm-base.enable = opt types.bool false;
	    options.services.openssh.enable = opt types.bool false;
	    options.services.cloud-init = { enable = opt types.bool false; network.enable = opt types.bool false; };
	    options.system.stateVersion = opt types.str "26.05";
	    options.system.build = opt (types.lazyAttrsOf types.unspecified) { };
	    options.boot.growPartition = opt types.bool false;
	    options.boot.kernelParams = opt (types.listOf types.str) [ ];
	    options.boot.loader.grub = { device = opt types.str ""; efiSupport = opt types.bool false; };
	    options.fileSystems = opt (types.attrsOf (types.submodule {
	      options = { device = opt (types.nullOr types.str) null; fsType = opt types.str "auto"; autoResize = opt types.bool false; };
	    })) { };
	  };
	  c = (lib.evalModules {
	    modules = [ decls ./images/`+name+`.nix ];
	    specialArgs.modulesPath = "`+imageModulesPath(t)+`"; # a string: no copy to the store
	    specialArgs.pkgs = { vmTools.qemu = "qemu"; };
	  }).config;
	in {
	  image = c.system.build.fireactionsImage;
	  grub = c.boot.loader.grub;
	  root = c.fileSystems."/" or null;
	  inherit (c.boot) growPartition;
	  inherit (c.system) stateVersion;
	  vmGeneration = c.virtualisation.azureImage.vmGeneration or null;
	}`, v)
}

type imageEval struct {
	Image struct {
		MakeDiskImage     map[string]any
		NixpkgsAzureImage string
	}
	Grub struct {
		Device     string
		EfiSupport bool
	}
	Root *struct {
		Device     string
		FsType     string
		AutoResize bool
	}
	GrowPartition bool
	StateVersion  string
	VMGeneration  *string
}

// stateVersion is a released NixOS (YY.05 or YY.11), not the channel's.
var releasedVersion = regexp.MustCompile(`^[0-9]{2}\.(05|11)$`)

// The qcow2 image's partition table and boot loader agree: "legacy+gpt"
// (GPT with a 1 MiB bios_grub partition) and BIOS GRUB on /dev/vda, the
// root file system by the label make-disk-image gives it, grown at boot.
func TestImageQcow2Consistent(t *testing.T) {
	var e imageEval
	evalImage(t, "qcow2", &e)
	args := e.Image.MakeDiskImage
	if args["partitionTableType"] != "legacy+gpt" || e.Grub.Device != "/dev/vda" || e.Grub.EfiSupport {
		t.Errorf("partition table %v with GRUB device %q, efiSupport %v: want legacy+gpt and BIOS GRUB on /dev/vda",
			args["partitionTableType"], e.Grub.Device, e.Grub.EfiSupport)
	}
	label := "nixos" // make-disk-image.nix's default label
	if l, ok := args["label"].(string); ok {
		label = l
	}
	if e.Root == nil || e.Root.Device != "/dev/disk/by-label/"+label || e.Root.FsType != "ext4" || !e.Root.AutoResize || !e.GrowPartition {
		t.Errorf("root file system %+v, growPartition %v: want ext4 by-label/%s, resized and grown", e.Root, e.GrowPartition, label)
	}
	if !releasedVersion.MatchString(e.StateVersion) {
		t.Errorf("stateVersion %q is not a released NixOS", e.StateVersion)
	}
}

// The Azure image is nixpkgs' own, Generation 2: nixpkgs' azure-image.nix
// then makes the "efi" partition table and GRUB with efiSupport together
// (this file sets neither, so they cannot disagree).
func TestImageAzureIsNixpkgsGen2(t *testing.T) {
	var e imageEval
	evalImage(t, "azure", &e)
	if e.Image.NixpkgsAzureImage != "v2" {
		t.Errorf("fireactionsImage is %+v; want nixpkgs' azureImage of Generation 2", e.Image)
	}
	if e.Image.MakeDiskImage != nil || e.Grub.Device != "" || e.Root != nil {
		t.Errorf("images/azure.nix makes its own disk image or boot set-up: %+v", e)
	}
	if !releasedVersion.MatchString(e.StateVersion) {
		t.Errorf("stateVersion %q is not a released NixOS", e.StateVersion)
	}
}
