//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
)

// isolationWorkflow fails when it finds what an earlier job wrote, then
// writes it: run twice, the second run passes only if its VM saw none of
// the first VM's writes (on /, in the runner's home, in /tmp).
const isolationWorkflow = `on: [push, workflow_dispatch]
jobs:
  isolation:
    runs-on: fireactions-image
    steps:
      - run: |
          echo "fireactions-vm=$(hostname) uid=$(id -u) env=$FA_IMAGE_ENV"
          grep -q '^overlay / overlay' /proc/mounts && echo "root-is-overlay"
          test ! -e /etc/motd || { echo "whiteout-ignored"; exit 1; }
          for f in /fa-marker "$HOME/fa-marker" /tmp/fa-marker; do
            if [ -e "$f" ]; then echo "LEFTOVER $f from $(cat "$f")"; exit 1; fi
            hostname > "$f"
          done
          echo "markers-written"
`

// TestImageRootedVMsSeeNoneOfEachOthersWrites runs Gitea jobs in VMs whose
// root is an OCI image the test builds (busybox, bash, the Gitea runner)
// and serves from a registry inside the test's namespace: the orchestrator
// pulls and flattens it, each VM boots it read-only under its own writable
// disk, the image's user and environment reach the job, and a second VM of
// the pool sees none of the first one's writes.
func TestImageRootedVMsSeeNoneOfEachOthersWrites(t *testing.T) {
	rig := newGiteaImageRig(t, fmt.Sprintf("faimg%d", os.Getpid()%100000))
	ns, bin, work, gitea, state, cfgPath := rig.ns, rig.bin, rig.work, rig.gitea, rig.state, rig.cfgPath
	imageRef := serveRegistry(t, ns) + "/e2e/runner:v1"
	start := time.Now()
	pushImage(t, ns, imageRef, runnerImage(t, giteaRunner()))
	t.Logf("FIGURE image built and pushed in %s", time.Since(start).Round(time.Millisecond))

	cfg := rig.config("e2eimg", work, "faimg0", "10.202.0.0/24")
	cfg.DrainGrace = "2m"
	cfg.Pools = []poolConfig{rig.imagePool("img", "fireactions-image", imageRef, "Always")}
	cfg.write(t, cfgPath)

	orch := startOrchestrator(t, ns, bin, cfgPath, state)
	orch.waitFor(t, 4*time.Minute, "the first VM to be idle", func() bool {
		for _, phase := range vmDirs(state) {
			if phase == "idle" {
				return true
			}
		}
		return false
	})
	if pulled := logLines(orch.log, regexp.MustCompile(`msg="image pulled"`)); len(pulled) != 1 {
		t.Fatalf("want one image pulled, log has %d lines: %v", len(pulled), pulled)
	} else {
		t.Logf("FIGURE %s", pulled[0])
	}

	gitea.api(http.MethodPost, "/api/v1/user/repos", map[string]any{"name": "iso", "default_branch": "main"}, nil)
	tree := filepath.Join(work, "repo")
	writeFile(t, filepath.Join(tree, ".gitea/workflows/iso.yml"), 0o644, isolationWorkflow)
	gitea.push(tree, "ci/iso", "first")
	orch.waitFor(t, 5*time.Minute, "the first run to complete", func() bool { return completedRuns(gitea, "ci/iso") == 1 })
	gitea.api(http.MethodPost, "/api/v1/repos/ci/iso/actions/workflows/iso.yml/dispatches", map[string]any{"ref": "main"}, nil)
	orch.waitFor(t, 5*time.Minute, "the second run to complete", func() bool { return completedRuns(gitea, "ci/iso") == 2 })

	// Output lines, not the script's text echoed in the log.
	vmOf := regexp.MustCompile(`fireactions-vm=([0-9a-f]+) uid=(\d+) env=(\S*)`)
	leftover := regexp.MustCompile(`LEFTOVER /\S+ from`)
	overlay, written := regexp.MustCompile(`(?m)Z root-is-overlay\s*$`), regexp.MustCompile(`(?m)Z markers-written\s*$`)
	vms := map[string]bool{}
	for _, j := range gitea.jobs("ci/iso") {
		logText := gitea.raw(fmt.Sprintf("/api/v1/repos/ci/iso/actions/jobs/%d/logs", j.ID))
		m := vmOf.FindStringSubmatch(logText)
		switch {
		case m == nil:
			t.Fatalf("job %d (%s): no VM line in its log:\n%s", j.ID, j.Conclusion, logText)
		case leftover.MatchString(logText):
			t.Errorf("job %d in VM %s saw an earlier VM's write:\n%s", j.ID, m[1], logText)
		case j.Conclusion != "success":
			t.Errorf("job %d concluded %s:\n%s", j.ID, j.Conclusion, logText)
		case !overlay.MatchString(logText) || !written.MatchString(logText):
			t.Errorf("job %d: the root is not the image's overlay, or the markers were not written:\n%s", j.ID, logText)
		case m[2] != "1001" || m[3] != "from-image":
			t.Errorf("job %d ran as uid %s with FA_IMAGE_ENV=%q; want the image's runner (1001) and its environment", j.ID, m[2], m[3])
		}
		vms[m[1]] = true
	}
	if len(vms) != 2 {
		t.Fatalf("2 jobs ran in %d VMs", len(vms))
	}

	orch.terminate(t)
	orch.waitExit(t, 2*time.Minute)
	assertNothingLeft(t, ns, gitea, state, "faimg0")
	for _, l := range logLines(orch.log, regexp.MustCompile(`event=runner-ready`)) {
		if m := regexp.MustCompile(`guest_uptime=(\S+)`).FindStringSubmatch(l); m != nil {
			t.Logf("FIGURE image root: guest kernel start -> runner ready %s", m[1])
		}
	}
	// The store kept the image, and nothing else.
	out, err := exec.Command(filepath.Join(bin, "fireactions"), "image", "ls", "--config", cfgPath).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "e2e/runner:v1") {
		t.Errorf("fireactions image ls: %v\n%s", err, out)
	}
}

func completedRuns(g *giteaServer, repo string) int {
	n := 0
	for _, r := range g.runs(repo) {
		if r.Status == "completed" {
			n++
		}
	}
	return n
}

// serveRegistry serves an empty OCI registry (distribution's in-memory
// one) inside ns until the test ends, and returns its host:port.
func serveRegistry(t *testing.T, ns *testNetns) string {
	t.Helper()
	ln, err := ns.listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: hosttest.Registry()}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// runnerImage is a three-layer image: busybox with its applets and a
// passwd naming the runner's user, bash, then the Gitea runner (and a
// whiteout of a file the first layer has).
func runnerImage(t *testing.T, runner string) v1.Image {
	t.Helper()
	out, err := exec.Command("/bin/busybox", "--list").Output()
	if err != nil {
		t.Fatalf("busybox --list: %v", err)
	}
	base := []tarEntry{
		{name: "./", mode: 0o1777, dir: true}, // the marker on / is the job's to write
		{name: "bin/", mode: 0o755, dir: true}, {name: "etc/", mode: 0o755, dir: true},
		{name: "home/", mode: 0o755, dir: true}, {name: "root/", mode: 0o700, dir: true},
		{name: "tmp/", mode: 0o1777, dir: true}, {name: "usr/", mode: 0o755, dir: true},
		{name: "sbin", link: "bin"}, {name: "usr/bin", link: "../bin"}, {name: "usr/sbin", link: "../bin"},
		{name: "bin/busybox", mode: 0o755, file: "/bin/busybox"},
		{name: "etc/passwd", mode: 0o644, content: "root:x:0:0:root:/root:/bin/sh\nrunner:x:1001:1001:runner:/home/runner:/bin/sh\n"},
		{name: "etc/group", mode: 0o644, content: "root:x:0:\nrunner:x:1001:\n"},
		{name: "etc/motd", mode: 0o644, content: "removed by a later layer\n"},
	}
	for _, a := range strings.Fields(string(out)) {
		if a != "busybox" && a != "bash" && !strings.Contains(a, "/") {
			base = append(base, tarEntry{name: "bin/" + a, link: "busybox"})
		}
	}
	layers := []v1.Layer{
		layerFrom(t, base),
		layerFrom(t, []tarEntry{{name: "bin/bash", mode: 0o755, file: "/bin/bash-static"}}),
		layerFrom(t, []tarEntry{{name: "bin/act_runner", mode: 0o755, file: runner}, {name: "etc/.wh.motd", mode: 0o644}}),
	}
	return hosttest.Image(t, v1.Config{Env: []string{"PATH=/usr/local/bin:/usr/bin:/bin", "FA_IMAGE_ENV=from-image"}}, layers...)
}

// tarEntry is a directory, a symlink (link), a host file copied in
// (file), a character device (char: its major and minor) or a file with
// content; owned by uid and gid, with extended attributes (xattrs).
type tarEntry struct {
	name, link, file, content string
	mode                      int64
	dir                       bool
	char                      *[2]int64
	uid, gid                  int
	xattrs                    map[string]string
}

func layerFrom(t *testing.T, entries []tarEntry) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Now()
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, ModTime: mtime, Typeflag: tar.TypeReg, Uid: e.uid, Gid: e.gid}
		for k, v := range e.xattrs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		data := []byte(e.content)
		switch {
		case e.dir:
			h.Typeflag = tar.TypeDir
		case e.char != nil:
			h.Typeflag, h.Devmajor, h.Devminor = tar.TypeChar, e.char[0], e.char[1]
		case e.link != "":
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, e.link, 0o777
		case e.file != "":
			b, err := os.ReadFile(e.file)
			if err != nil {
				t.Fatal(err)
			}
			data = b
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(data))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write(data)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return hosttest.Layer(t, buf.Bytes())
}

// pushImage pushes img to the registry inside the namespace.
func pushImage(t *testing.T, ns *testNetns, ref string, img v1.Image) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{DialContext: ns.dial}
	if err := remote.Write(r, img, remote.WithTransport(tr)); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}
