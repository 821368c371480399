package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
)

func templateConfig() agentproto.Config {
	return agentproto.Config{Template: true, Modules: []string{"/etc/fireactions/modules/01-virtio.ko"}}
}

// TestATemplateWaitsForItsIdentityThenBootsAsTheVM: a template's agent
// mounts and loads its modules, waits for its identity, and only then —
// reseeded, clock and MAC set, and only then acknowledged to the host —
// follows the VM's own config exactly as a cold boot does (the same
// calls as TestBootRunsTheJobAndReportsInOrder after the modules the
// template loaded), reporting to the VM's host and writing the runner's
// credential.
func TestATemplateWaitsForItsIdentityThenBootsAsTheVM(t *testing.T) {
	host := newHostServer(t, "vm-token")
	root := newTestRoot(t, templateConfig())
	sys := newFakeSys(t, root)
	now := time.Now()
	id := agentproto.Identity{Config: testConfig(host.URL), MAC: "02:00:00:00:00:2a", Seed: make([]byte, 64), Now: now}
	sys.identity, _ = json.Marshal(id)
	con := &hosttest.SyncBuffer{}
	a := &Agent{Root: root, Sys: sys, Console: con}

	a.Boot(context.Background())

	if got := host.events(); !slices.Equal(got, jobEvents) {
		t.Fatalf("events %v, want %v\nconsole:\n%s", got, jobEvents, con)
	}
	wantCalls := []string{
		"mount proc /proc", "mount sysfs /sys", "mount devtmpfs /dev", "mount devpts /dev/pts",
		"mount tmpfs /dev/shm", "mount tmpfs /tmp", "mount tmpfs /run",
		"module /etc/fireactions/modules/01-virtio.ko", "mount cgroup2 /sys/fs/cgroup",
		"await-identity", "reseed 64 bytes", fmt.Sprintf("clock %d", now.Unix()),
		"module /etc/fireactions/modules/02-virtio_net.ko", "mac eth0 02:00:00:00:00:2a",
		"answer " + agentproto.IdentityAck,
		"hostname runner-vm-42", "network eth0 10.200.0.2/24",
		"mount cgroup2 /sys/fs/cgroup", "start sh -c " + runnerScript, "kill-user 1001", "poweroff",
	}
	if got := sys.callList(); !slices.Equal(got, wantCalls) {
		t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantCalls, "\n"))
	}
	if got := readFile(t, filepath.Join(root, "home/runner/.runner")); !strings.Contains(got, "runner-secret") {
		t.Errorf("the runner's credential file holds %q", got)
	}
	if _, err := os.Stat(filepath.Join(root, agentproto.ConfigPath)); !os.IsNotExist(err) {
		t.Errorf("the template's config is left: %v", err)
	}
}

// TestATemplateCarriesNothingOfOneVM: a template's config with anything
// every restore would share (credential, report token, address, root) is
// refused before the agent waits for an identity; the bare template
// config is the control.
func TestATemplateCarriesNothingOfOneVM(t *testing.T) {
	full := testConfig("http://10.200.0.1:8080")
	for name, mod := range map[string]func(*agentproto.Config){
		"control":      func(*agentproto.Config) {},
		"runner files": func(c *agentproto.Config) { c.Runner.Files = full.Runner.Files },
		"report token": func(c *agentproto.Config) { c.Report = full.Report },
		"address":      func(c *agentproto.Config) { c.Network = full.Network },
		"hostname":     func(c *agentproto.Config) { c.Hostname = "runner-vm-42" },
		"root":         func(c *agentproto.Config) { c.Root = &agentproto.Root{FSType: "ext4"} },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := templateConfig()
			mod(&cfg)
			sys := newFakeSys(t, newTestRoot(t, cfg))
			a := &Agent{Root: sys.root, Sys: sys, Console: &hosttest.SyncBuffer{}}
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel()
			err := a.Run(ctx) // no identity ever comes: the control waits until ctx ends
			waited := slices.Contains(sys.callList(), "await-identity")
			if name == "control" {
				if !waited || err == nil || !strings.Contains(err.Error(), "template") {
					t.Fatalf("the bare template config: waited %v, err %v", waited, err)
				}
				return
			}
			if waited || err == nil || !strings.Contains(err.Error(), "a template carries") {
				t.Fatalf("a template with %s: waited %v, err %v", name, waited, err)
			}
		})
	}
}

// TestAnIdentityWithoutSeedIsRefused: a restore whose identity has no
// seed would run on its template's random state: the agent stops before
// the VM's config is used (no hostname, network or runner).
func TestAnIdentityWithoutSeedIsRefused(t *testing.T) {
	sys := newFakeSys(t, newTestRoot(t, templateConfig()))
	sys.identity, _ = json.Marshal(agentproto.Identity{Config: testConfig("http://10.200.0.1:8080"), Now: time.Now()})
	a := &Agent{Root: sys.root, Sys: sys, Console: &hosttest.SyncBuffer{}, FlushTimeout: time.Millisecond}
	err := a.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "reseed") {
		t.Fatalf("an identity without seed: %v", err)
	}
	for _, c := range sys.callList() {
		if strings.HasPrefix(c, "hostname") || strings.HasPrefix(c, "network") || strings.HasPrefix(c, "start") {
			t.Errorf("the agent went on after a failed reseed: %s", c)
		}
	}
}

// TestAnImageTemplateTouchesItsDisksOnlyAfterItsIdentity: a template of
// an image pool boots with the pool's drives (the image, a writable disk
// of its own that its restores replace), but its agent looks for and
// mounts neither before its identity: only the restore's config names
// them, and the image and the restore's writable disk are mounted after
// the wait, found by their serials.
func TestAnImageTemplateTouchesItsDisksOnlyAfterItsIdentity(t *testing.T) {
	host := newHostServer(t, "vm-token")
	root := newTestRoot(t, templateConfig())
	addDisk(t, root, "vda", "fa-image")
	addDisk(t, root, "vdb", "fa-writable")
	sys := newFakeSys(t, root)
	id := agentproto.Identity{Config: imageRootConfig(host.URL), MAC: "02:00:00:00:00:2b", Seed: make([]byte, 64), Now: time.Now()}
	sys.identity, _ = json.Marshal(id)
	con := &hosttest.SyncBuffer{}
	a := &Agent{Root: root, Sys: sys, Console: con}

	a.Boot(context.Background())

	calls := sys.callList()
	waited := slices.Index(calls, "await-identity")
	image, writable := slices.Index(calls, "mount erofs /mnt/image"), slices.Index(calls, "mount ext4 /mnt/writable")
	if waited < 0 || image < waited || writable < waited {
		t.Fatalf("await-identity at %d, the image mounted at %d, the writable disk at %d; calls:\n%s\nconsole:\n%s",
			waited, image, writable, strings.Join(calls, "\n"), con)
	}
	if !slices.Contains(sys.mounts, "/dev/vda -> /mnt/image") || !slices.Contains(sys.mounts, "/dev/vdb -> /mnt/writable") {
		t.Errorf("devices mounted: %v", sys.mounts)
	}
	if got := host.events(); !slices.Equal(got, jobEvents) {
		t.Errorf("events %v, want %v", got, jobEvents)
	}
}

// TestATemplateMakesTheJobsCgroupsBeforeItWaits: the job's cgroups hold
// nothing of one VM, so the template makes them — cgroup2 mounted, the
// controllers enabled for the children, the runner's and the job's
// cgroups — before it waits for its identity: a restore finds them made.
// The limits are each VM's (from its memory then): not yet written.
func TestATemplateMakesTheJobsCgroupsBeforeItWaits(t *testing.T) {
	root := newTestRoot(t, templateConfig())
	cg := filepath.Join(root, "sys/fs/cgroup")
	for name, content := range map[string]string{"cgroup.controllers": "cpu memory pids\n", "cgroup.subtree_control": ""} {
		if err := os.MkdirAll(cg, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(cg, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sys := newFakeSys(t, root)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var atAwait []string
	sys.onAwait = func() {
		defer cancel() // no host comes: the wait ends here
		atAwait = append(atAwait, "subtree_control "+readFile(t, filepath.Join(cg, "cgroup.subtree_control")))
		for _, c := range []string{runnerCgroup, jobCgroup} {
			if fi, err := os.Stat(filepath.Join(cg, c)); err == nil && fi.IsDir() {
				atAwait = append(atAwait, "cgroup "+c)
			}
		}
		if _, err := os.Stat(filepath.Join(cg, jobCgroup, "memory.max")); err == nil {
			atAwait = append(atAwait, "job limits written")
		}
	}
	a := &Agent{Root: root, Sys: sys, Console: &hosttest.SyncBuffer{}}

	if _, err := a.awaitIdentity(ctx, templateConfig()); err == nil {
		t.Fatal("the template's wait ended without an identity and without an error")
	}

	want := []string{"subtree_control +pids +memory +cpu", "cgroup runner", "cgroup job"}
	if !slices.Equal(atAwait, want) {
		t.Errorf("when the template waits: %q, want %q", atAwait, want)
	}
}

// TestAnIdentityTheAgentCannotApplyIsNeverAcknowledged: the host counts a
// restore as good on the agent's acknowledgement, and a restore it
// counts is never booted cold. So the agent acknowledges its identity
// only once it is parsed, checked and applied, and refuses (and powers
// off: Run ends with the error) one whose config check fails, whose MAC
// is missing, malformed or cannot be set, or that is no identity at
// all — before the VM's config is used. The good identity is the
// control.
func TestAnIdentityTheAgentCannotApplyIsNeverAcknowledged(t *testing.T) {
	good := func() agentproto.Identity {
		return agentproto.Identity{Config: testConfig("http://10.200.0.1:8080"), MAC: "02:00:00:00:00:2a", Seed: make([]byte, 64), Now: time.Now()}
	}
	for name, tc := range map[string]struct {
		line   func() []byte
		macErr error
		err    string
	}{
		"control":             {line: marshalIdentity(t, good())},
		"config check fails":  {line: marshalIdentity(t, with(good(), func(id *agentproto.Identity) { id.Config.Runner.UID = 0 })), err: "must not run as root"},
		"a template's config": {line: marshalIdentity(t, with(good(), func(id *agentproto.Identity) { id.Config.Template = true })), err: "template"},
		"no MAC":              {line: marshalIdentity(t, with(good(), func(id *agentproto.Identity) { id.MAC = "" })), err: "MAC"},
		"malformed MAC":       {line: marshalIdentity(t, with(good(), func(id *agentproto.Identity) { id.MAC = "02:00:00:00:2a" })), err: "MAC"},
		"not an Ethernet MAC": {line: marshalIdentity(t, with(good(), func(id *agentproto.Identity) { id.MAC = "02:00:00:00:00:00:00:2a" })), err: "MAC"},
		"MAC cannot be set":   {line: marshalIdentity(t, good()), macErr: errors.New("set MAC of eth0: no such device"), err: "no such device"},
		"no seed":             {line: marshalIdentity(t, with(good(), func(id *agentproto.Identity) { id.Seed = nil })), err: "reseed"},
		"not JSON":            {line: func() []byte { return []byte("{") }, err: "parsing the identity"},
	} {
		t.Run(name, func(t *testing.T) {
			sys := newFakeSys(t, newTestRoot(t, templateConfig()))
			sys.identity, sys.macErr = tc.line(), tc.macErr
			a := &Agent{Root: sys.root, Sys: sys, Console: &hosttest.SyncBuffer{}}

			cfg, err := a.awaitIdentity(context.Background(), templateConfig())

			calls := sys.callList()
			acked := slices.Contains(calls, "answer "+agentproto.IdentityAck)
			refused := slices.Contains(calls, "answer "+agentproto.IdentityRefused)
			if tc.err == "" {
				if err != nil || !acked || refused || cfg.VMID != "vm-42" {
					t.Fatalf("the good identity: err %v, acknowledged %v, refused %v, VM %q; calls %q", err, acked, refused, cfg.VMID, calls)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("err %v, want one saying %q", err, tc.err)
			}
			if acked || !refused {
				t.Errorf("acknowledged %v, refused %v; calls %q", acked, refused, calls)
			}
			if cfg.VMID != "" {
				t.Errorf("a refused identity's config was returned: %q", cfg.VMID)
			}
		})
	}
}

func marshalIdentity(t *testing.T, id agentproto.Identity) func() []byte {
	b, err := json.Marshal(id)
	if err != nil {
		t.Fatal(err)
	}
	return func() []byte { return b }
}

func with(id agentproto.Identity, mod func(*agentproto.Identity)) agentproto.Identity {
	mod(&id)
	return id
}
