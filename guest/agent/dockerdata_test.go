package agent

import (
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
)

// bootImageDocker boots an image root whose pool asks for Docker, with
// prepare run on the image's directory (the new root in the fake).
func bootImageDocker(t *testing.T, prepare func(newRoot string)) (*fakeSys, *hosttest.SyncBuffer) {
	t.Helper()
	host := newHostServer(t, "vm-token")
	cfg := imageRootConfig(host.URL)
	cfg.Root.Name = "registry.test/runner:v1"
	cfg.Registry = &agentproto.Registry{Docker: true}
	root := newTestRoot(t, cfg)
	addDisk(t, root, "vda", "fa-image")
	addDisk(t, root, "vdb", "fa-writable")
	if prepare != nil {
		prepare(filepath.Join(root, "mnt/root"))
	}
	sys := newFakeSys(t, root)
	con := &hosttest.SyncBuffer{}
	(&Agent{Root: root, Sys: sys, Console: con}).Boot(context.Background())
	return sys, con
}

// On an image root, /var/lib/docker is the writable disk's own directory,
// bind-mounted into the new root after the overlay and before the switch;
// an image without dockerd then fails the boot naming the image.
func TestDockerDataIsOnTheWritableDisk(t *testing.T) {
	sys, con := bootImageDocker(t, nil)
	calls := sys.callList()
	overlay := slices.Index(calls, "mount overlay /mnt/root")
	data := slices.Index(calls, "mount  /mnt/root/var/lib/docker")
	sw := slices.Index(calls, "switch_root /mnt/root")
	if overlay < 0 || data < overlay || sw < data {
		t.Fatalf("want the overlay, then /var/lib/docker, then the switch:\n%s\nconsole:\n%s", strings.Join(calls, "\n"), con)
	}
	if !slices.Contains(sys.mounts, "/mnt/writable/docker -> /mnt/root/var/lib/docker") {
		t.Errorf("bind mounts: %v", sys.mounts)
	}
	if !strings.Contains(con.String(), "fatal: docker: the pool asks for Docker (cache.docker), but image registry.test/runner:v1 has no dockerd") {
		t.Errorf("no error naming the image without dockerd:\n%s", con)
	}
}

// An image whose /var/lib/docker is a symlink (or a file) cannot have it
// mounted: the boot fails naming the image and the path, before the
// switch, and nothing is mounted through the link.
func TestDockerDataThroughASymlinkFailsTheBoot(t *testing.T) {
	for name, prepare := range map[string]func(string){
		"symlink": func(r string) {
			must(t, os.MkdirAll(filepath.Join(r, "var/lib"), 0o755))
			must(t, os.Symlink("/etc", filepath.Join(r, "var/lib/docker")))
		},
		"parent symlink": func(r string) {
			must(t, os.MkdirAll(filepath.Join(r, "var"), 0o755))
			must(t, os.Symlink("/etc", filepath.Join(r, "var/lib")))
		},
		"file": func(r string) {
			must(t, os.MkdirAll(filepath.Join(r, "var/lib"), 0o755))
			must(t, os.WriteFile(filepath.Join(r, "var/lib/docker"), nil, 0o644))
		},
	} {
		t.Run(name, func(t *testing.T) {
			sys, con := bootImageDocker(t, prepare)
			if !strings.Contains(con.String(), "fatal: image registry.test/runner:v1: mounting /var/lib/docker: /var/lib") ||
				!strings.Contains(con.String(), "is not a directory") {
				t.Fatalf("console:\n%s", con)
			}
			if slices.ContainsFunc(sys.callList(), func(c string) bool {
				return strings.HasPrefix(c, "switch_root") || strings.Contains(c, "lib/docker")
			}) {
				t.Fatalf("mounted or switched anyway: %v", sys.callList())
			}
		})
	}
}

// Docker's subnets overlap neither the VM's network nor the cache, the
// proxy or the DNS server, wherever those are; with nothing in the way
// they are Docker's own defaults; with everything in the way, an error.
func TestDockerSubnetsAvoidTheVMNetworkAndCache(t *testing.T) {
	cases := []struct {
		name      string
		net       agentproto.Network
		reg       *agentproto.Registry
		bip, pool string
	}{
		{"defaults", agentproto.Network{Address: "10.200.0.2/24", Gateway: "10.200.0.1"},
			&agentproto.Registry{Mirrors: map[string][]string{"docker.io": {"http://10.200.0.1:5000"}}}, "172.17.0.1/16", "172.18.0.0/16"},
		{"host network on docker0's", agentproto.Network{Address: "172.17.0.2/24", Gateway: "172.17.0.1"}, nil, "172.18.0.1/16", "172.19.0.0/16"},
		{"cache, proxy and DNS elsewhere", agentproto.Network{Address: "172.17.5.2/24", Gateway: "172.17.5.1", DNS: []string{"172.19.0.53"}},
			&agentproto.Registry{
				Mirrors:    map[string][]string{"ghcr.io": {"https://172.18.3.4:5000/ghcr.io"}},
				HTTPSProxy: "http://[::ffff:172.20.0.9]:3128",
			}, "172.21.0.1/16", "172.22.0.0/16"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n, err := chooseDockerNets(dockerAvoid(c.net, "http://"+c.net.Gateway+":8081/report", c.reg))
			if err != nil {
				t.Fatal(err)
			}
			if n.bip != c.bip || n.pool.String() != c.pool {
				t.Fatalf("bip %s pool %s, want %s and %s", n.bip, n.pool, c.bip, c.pool)
			}
		})
	}
	all := []netip.Prefix{netip.MustParsePrefix("172.16.0.0/12"), netip.MustParsePrefix("10.0.0.0/8")}
	if _, err := chooseDockerNets(all); err == nil || !strings.Contains(err.Error(), "no subnet for Docker's bridge") {
		t.Fatalf("every candidate taken: %v", err)
	}
}

// daemon.json gets the subnets unless the image's sets them itself.
func TestDaemonJSONSubnets(t *testing.T) {
	nets := &dockerNets{bip: "172.18.0.1/16", pool: netip.MustParsePrefix("172.19.0.0/16")}
	b, err := dockerDaemonJSON(nil, nil, "1002", nets)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	must(t, json.Unmarshal(b, &got))
	pools, _ := json.Marshal(got["default-address-pools"])
	if got["bip"] != "172.18.0.1/16" || string(pools) != `[{"base":"172.19.0.0/16","size":24}]` {
		t.Fatalf("daemon.json:\n%s", b)
	}
	b, err = dockerDaemonJSON([]byte(`{"bip": "192.168.77.1/24", "default-address-pools": []}`), nil, "1002", nets)
	if err != nil {
		t.Fatal(err)
	}
	got = nil
	must(t, json.Unmarshal(b, &got))
	if got["bip"] != "192.168.77.1/24" || len(got["default-address-pools"].([]any)) != 0 {
		t.Fatalf("the image's subnets were replaced:\n%s", b)
	}
}

// An image's own subnets that overlap what the guest's were chosen around
// are an error naming the field; clear ones are kept (the positive
// control), as are values dockerd itself would refuse.
func TestImageDaemonJSONSubnetsClash(t *testing.T) {
	avoid := []netip.Prefix{netip.MustParsePrefix("10.200.0.0/24"), netip.MustParsePrefix("192.168.5.7/32")}
	nets := &dockerNets{bip: "172.17.0.1/16", pool: netip.MustParsePrefix("172.18.0.0/16"), avoid: avoid}
	for _, c := range []struct{ image, field string }{
		{`{"bip": "10.200.0.1/16"}`, `"bip" 10.200.0.1/16 overlaps 10.200.0.0/24`},
		{`{"default-address-pools": [{"base": "172.30.0.0/16", "size": 24}, {"base": "192.168.0.0/16", "size": 24}]}`, `"default-address-pools" 192.168.0.0/16 overlaps 192.168.5.7/32`},
	} {
		_, err := dockerDaemonJSON([]byte(c.image), nil, "1002", nets)
		if err == nil || !strings.Contains(err.Error(), c.field) || !strings.Contains(err.Error(), "daemon.json") {
			t.Errorf("image daemon.json %s: %v, want an error naming %s", c.image, err, c.field)
		}
	}
	for _, ok := range []string{`{"bip": "10.201.0.1/24", "default-address-pools": [{"base": "172.30.0.0/16", "size": 24}]}`, `{"bip": "not a subnet"}`} {
		if _, err := dockerDaemonJSON([]byte(ok), nil, "1002", nets); err != nil {
			t.Errorf("image daemon.json %s: %v", ok, err)
		}
	}
}

// In the guest, the clash fails the boot before dockerd starts, on the
// console and so in the host's report.
func TestImageDaemonJSONClashFailsTheBoot(t *testing.T) {
	_, sys, con := bootRegistry(t, dockerConfig(t), func(root string) {
		installDockerd(t, root, "#!/bin/sh\nexit 1\n")
		must(t, os.MkdirAll(filepath.Join(root, "etc/docker"), 0o755))
		must(t, os.WriteFile(filepath.Join(root, dockerConfigPath), []byte(`{"bip": "10.200.0.9/24"}`), 0o644))
	})
	if !strings.Contains(con.String(), `fatal: the image's /etc/docker/daemon.json "bip" 10.200.0.9/24 overlaps 10.200.0.0/24`) {
		t.Fatalf("console:\n%s", con)
	}
	if slices.ContainsFunc(sys.callList(), func(c string) bool { return strings.HasPrefix(c, "start ") }) {
		t.Fatalf("started something with a clashing daemon.json: %v", sys.callList())
	}
}
