package firecrackerdouble

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/vmm/firecracker"
)

// snapshotted is a started fixture paused and snapshotted into dir's
// vm.snap and vm.mem.
func snapshotted(t *testing.T) (snap, mem string) {
	t.Helper()
	dir := t.TempDir()
	f := newFixture(t)
	startedFixture(f)
	f.mustAccept("PATCH", "/vm", `{"state":"Paused"}`)
	snap, mem = filepath.Join(dir, "vm.snap"), filepath.Join(dir, "vm.mem")
	f.mustAccept("PUT", "/snapshot/create", `{"snapshot_path":"`+snap+`","mem_file_path":"`+mem+`"}`)
	return snap, mem
}

// TestTheDoubleRefusesSnapshotRequestsFirecrackerRefuses: each request
// below is refused with 400 and a fault saying why, as Firecracker 1.17's
// description (body schema, "Pre-boot only", "Post-boot only", "only on
// a fresh Firecracker process", "exactly one of the mem_* fields") and
// its phase rules (create wants a Paused microVM) say; the positive
// control, the same sequence done right, is accepted.
func TestTheDoubleRefusesSnapshotRequestsFirecrackerRefuses(t *testing.T) {
	snap, mem := snapshotted(t)
	load := func(extra string) string { return `{"snapshot_path":"` + snap + `"` + extra + `}` }
	withMem := `,"mem_file_path":"` + mem + `"`
	cases := []struct {
		name         string
		setup        func(f *fixture)
		method, path string
		body         string
		fault        string
	}{
		{"load after boot-source configured", func(f *fixture) { f.mustAccept("PUT", "/boot-source", f.bootSource()) },
			"PUT", "/snapshot/load", load(withMem), faultLoadNotAllowed},
		{"load after a network interface configured", func(f *fixture) { f.mustAccept("PUT", "/network-interfaces/eth0", nic) },
			"PUT", "/snapshot/load", load(withMem), faultLoadNotAllowed},
		{"load after InstanceStart", startedFixture, "PUT", "/snapshot/load", load(withMem), faultAfterStart},
		{"load with a memory file that does not exist", nil, "PUT", "/snapshot/load",
			load(`,"mem_file_path":"` + mem + `.missing"`), "Cannot open the memory file"},
		{"load with a snapshot file that does not exist", nil, "PUT", "/snapshot/load",
			`{"snapshot_path":"` + snap + `.missing"` + withMem + `}`, "Cannot open snapshot file"},
		{"load with both mem_file_path and mem_backend", nil, "PUT", "/snapshot/load",
			load(withMem + `,"mem_backend":{"backend_type":"File","backend_path":"` + mem + `"}`), faultMemExactlyOne},
		{"load with neither memory field", nil, "PUT", "/snapshot/load", load(""), faultMemExactlyOne},
		{"load without snapshot_path", nil, "PUT", "/snapshot/load", `{"mem_file_path":"` + mem + `"}`, `missing field "snapshot_path"`},
		{"create before InstanceStart", nil, "PUT", "/snapshot/create",
			`{"snapshot_path":"/tmp/x.snap","mem_file_path":"/tmp/x.mem"}`, faultBeforeStart},
		{"create while running", startedFixture, "PUT", "/snapshot/create",
			`{"snapshot_path":"/tmp/x.snap","mem_file_path":"/tmp/x.mem"}`, faultNotPaused},
		{"create without mem_file_path", startedFixture, "PUT", "/snapshot/create",
			`{"snapshot_path":"/tmp/x.snap"}`, `missing field "mem_file_path"`},
		{"create with an unknown snapshot type", func(f *fixture) {
			startedFixture(f)
			f.mustAccept("PATCH", "/vm", `{"state":"Paused"}`)
		}, "PUT", "/snapshot/create", `{"snapshot_path":"/tmp/x.snap","mem_file_path":"/tmp/x.mem","snapshot_type":"Incremental"}`, `unknown variant "Incremental"`},
		{"pause before InstanceStart", nil, "PATCH", "/vm", `{"state":"Paused"}`, faultBeforeStart},
		{"a state the description does not list", startedFixture, "PATCH", "/vm", `{"state":"Stopped"}`, `unknown variant "Stopped"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t)
			if c.setup != nil {
				c.setup(f)
			}
			code, fault := f.do(c.method, c.path, c.body)
			if code != http.StatusBadRequest || !strings.Contains(fault, c.fault) {
				t.Fatalf("%s %s %s: got %d %q, want 400 with %q", c.method, c.path, c.body, code, fault, c.fault)
			}
		})
	}

	t.Run("positive control: a fresh process loads, resumes, pauses and snapshots again", func(t *testing.T) {
		f := newFixture(t)
		f.mustAccept("PUT", "/snapshot/load", load(withMem))
		if got := f.srv.state(); got != "Paused" {
			t.Fatalf("loaded without resume_vm: state %q, want Paused", got)
		}
		f.mustAccept("PATCH", "/vm", `{"state":"Resumed"}`)
		f.mustAccept("PATCH", "/vm", `{"state":"Paused"}`)
		again := filepath.Join(t.TempDir(), "again")
		f.mustAccept("PUT", "/snapshot/create", `{"snapshot_path":"`+again+`.snap","mem_file_path":"`+again+`.mem","snapshot_type":"Full"}`)
		if _, err := os.Stat(again + ".mem"); err != nil {
			t.Fatal(err)
		}
		g := newFixture(t)
		g.mustAccept("PUT", "/snapshot/load", `{"snapshot_path":"`+snap+`","mem_backend":{"backend_type":"File","backend_path":"`+mem+`"},"resume_vm":true}`)
		if got := g.srv.state(); got != "Running" {
			t.Fatalf("loaded with resume_vm: state %q, want Running", got)
		}
	})
}

// TestTheDriversSnapshotCallsPassTheDouble: the driver's client pauses,
// snapshots, and loads into a fresh process (with its own TAP through
// network_overrides) as Firecracker takes it; its create on a running
// microVM is refused with Firecracker's reason.
func TestTheDriversSnapshotCallsPassTheDouble(t *testing.T) {
	ctx := context.Background()
	serve := func(f *fixture) *firecracker.Client {
		sock := filepath.Join(t.TempDir(), "api.sock")
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: f.srv}
		go srv.Serve(l)
		t.Cleanup(func() { srv.Close() })
		c := firecracker.NewClient(sock, 0)
		t.Cleanup(c.Close)
		return c
	}
	f := newFixture(t)
	startedFixture(f)
	c := serve(f)
	dir := t.TempDir()
	create := firecracker.SnapshotCreate{SnapshotPath: filepath.Join(dir, "vm.snap"), MemFilePath: filepath.Join(dir, "vm.mem"), SnapshotType: "Full"}
	var apiErr *firecracker.APIError
	if err := c.CreateSnapshot(ctx, create); !errors.As(err, &apiErr) || apiErr.Fault != faultNotPaused {
		t.Fatalf("create on a running microVM: %v", err)
	}
	if err := c.Pause(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.CreateSnapshot(ctx, create); err != nil {
		t.Fatal(err)
	}
	g := newFixture(t)
	load := firecracker.SnapshotLoad{SnapshotPath: create.SnapshotPath, ResumeVM: true,
		MemBackend:       firecracker.MemoryBackend{BackendType: "File", BackendPath: create.MemFilePath},
		NetworkOverrides: []firecracker.NetworkOverride{{IfaceID: "eth0", HostDevName: "fatap0"}}}
	if err := serve(g).LoadSnapshot(ctx, load); err != nil {
		t.Fatal(err)
	}
	if g.srv.state() != "Running" {
		t.Fatalf("loaded with resume_vm: %s", g.srv.state())
	}
}
