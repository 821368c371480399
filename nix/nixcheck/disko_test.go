//go:build nixcheck

package nixcheck

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// diskoOptions are the options of each disko type the layouts use, as
// nix-community/disko declares them (lib/types/{disk,gpt,mdadm,mdraid,
// filesystem}.nix, and the hooks every type gets from lib/default.nix
// mkSubType), at commit 878ec37d6a8f of 2026-03-14.
var diskoOptions = map[string][]string{
	"disk":       {"name", "type", "device", "destroy", "imageName", "imageSize", "content"},
	"gpt":        {"type", "device", "partitions", "efiGptPartitionFirst"},
	"partition":  {"type", "attributes", "device", "priority", "name", "uuid", "label", "size", "alignment", "start", "end", "content", "hybrid"},
	"mdadm":      {"name", "type", "level", "metadata", "content", "extraArgs"},
	"mdraid":     {"type", "device", "name"},
	"filesystem": {"type", "device", "extraArgs", "mountOptions", "mountpoint", "format"},
}

var (
	diskoHooks = []string{"preCreateHook", "postCreateHook", "preMountHook", "postMountHook", "preUnmountHook", "postUnmountHook"}
	// disko's gpt partition size and type (sgdisk code) patterns.
	diskoSize     = regexp.MustCompile(`^([0-9]+[KMGTP]?|100%)$`)
	diskoPartType = regexp.MustCompile(`^[A-Fa-f0-9]{4}$`)
)

// diskoCheck walks a disko.devices value: every option a disko type
// declares, sizes and partition types in disko's formats.
func diskoCheck(path, kind string, v map[string]any) []string {
	var errs []string
	allowed := append(append([]string{}, diskoOptions[kind]...), diskoHooks...)
	if diskoOptions[kind] == nil {
		return []string{fmt.Sprintf("%s: type %q is not one this check knows", path, kind)}
	}
	for k := range v {
		if !contains(allowed, k) {
			errs = append(errs, fmt.Sprintf("%s.%s: disko's %s has no option %s", path, k, kind, k))
		}
	}
	if kind == "partition" {
		if s, _ := v["size"].(string); !diskoSize.MatchString(s) {
			errs = append(errs, fmt.Sprintf("%s.size: %q is not a disko size", path, s))
		}
		if s, ok := v["type"].(string); ok && !diskoPartType.MatchString(s) {
			errs = append(errs, fmt.Sprintf("%s.type: %q is not an sgdisk code", path, s))
		}
	}
	if kind == "gpt" {
		parts, _ := v["partitions"].(map[string]any)
		for name, p := range parts {
			errs = append(errs, diskoCheck(path+".partitions."+name, "partition", p.(map[string]any))...)
		}
	}
	if c, ok := v["content"].(map[string]any); ok {
		t, _ := c["type"].(string)
		errs = append(errs, diskoCheck(path+".content", t, c)...)
	}
	return errs
}

// Every provider's layout uses only disko's option names, in its formats,
// mounts / (and /boot), and the RAID one configures mdadm's monitor.
func TestDiskoLayouts(t *testing.T) {
	var layouts map[string]struct {
		Devices struct {
			Disk  map[string]map[string]any
			Mdadm map[string]map[string]any
		}
		MdadmConf *string
	}
	eval(t, `let
	  lib = `+libExpr(t)+`;
	  pkgs = { writeShellScript = name: _: "/nix/store/00000000000000000000000000000000-${name}"; util-linux = "/nix/store/util-linux"; };
	  layout = p: let m = import (./deploy/disko + "/${p}.nix") { inherit lib pkgs; }; in {
	    devices = m.disko.devices;
	    mdadmConf = m.boot.swraid.mdadmConf or null;
	  };
	in lib.genAttrs [ "do" "hetzner" "generic" "bare-metal" ] layout`, &layouts)
	if len(layouts) != 4 {
		t.Fatalf("layouts: %v", layouts)
	}
	for p, l := range layouts {
		var errs []string
		var mounts []string
		var walkMounts func(v any)
		walkMounts = func(v any) {
			switch v := v.(type) {
			case map[string]any:
				if m, ok := v["mountpoint"].(string); ok {
					mounts = append(mounts, m)
				}
				for _, c := range v {
					walkMounts(c)
				}
			}
		}
		for name, d := range l.Devices.Disk {
			errs = append(errs, diskoCheck("disko.devices.disk."+name, "disk", d)...)
			walkMounts(d)
		}
		for name, d := range l.Devices.Mdadm {
			errs = append(errs, diskoCheck("disko.devices.mdadm."+name, "mdadm", d)...)
			walkMounts(d)
		}
		sort.Strings(mounts)
		if strings.Join(mounts, " ") != "/ /boot" {
			t.Errorf("deploy/disko/%s.nix mounts %v, want / and /boot", p, mounts)
		}
		for _, e := range errs {
			t.Errorf("deploy/disko/%s.nix: %s", p, e)
		}
		// nixpkgs nixos/modules/tasks/swraid.nix: without either, mdmon crashes.
		if len(l.Devices.Mdadm) > 0 && (l.MdadmConf == nil || !regexp.MustCompile(`(?m)^\s*(MAILADDR|PROGRAM)\s`).MatchString(*l.MdadmConf)) {
			t.Errorf("deploy/disko/%s.nix: boot.swraid.mdadmConf has neither MAILADDR nor PROGRAM: %v", p, l.MdadmConf)
		}
	}
}
