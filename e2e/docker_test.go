//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
)

// dockerWorkflow runs twice at once (a matrix of two), each job in a VM of
// its own: an action hosted on the same Gitea (DEFAULT_ACTIONS_URL = self,
// so `uses: ci/hello-action@main` is fetched from it and run with the
// image's node), then a git clone of the repository, a `docker build` of a
// FROM scratch image holding the repository's static busybox, and two
// `docker run`s of it, the second with --network none, and then a pull of
// a Docker Hub image, which only the test's mirror has. Lines starting
// with FA are what the test reads.
const dockerWorkflow = `on: [push]
jobs:
  docker:
    strategy:
      matrix:
        n: [a, b]
    runs-on: fireactions-docker
    steps:
      - uses: ci/hello-action@main
        with:
          who: ${{ matrix.n }}
      - run: |
          echo "FA vm=$(hostname)"
          echo "FA before n=${{ matrix.n }} images=$(docker images -aq | wc -l) containers=$(docker ps -aq | wc -l)"
          git clone -q "${GITHUB_SERVER_URL}/${GITHUB_REPOSITORY}" src
          cd src
          start=$(date +%s%N)
          docker build -q -t e2e/hello-${{ matrix.n }} . >/dev/null
          docker run --rm e2e/hello-${{ matrix.n }} echo "FA scratch says hello n=${{ matrix.n }}"
          ifaces=$(docker run --rm --network none e2e/hello-${{ matrix.n }} ls /sys/class/net | tr '\n' ' ')
          echo "FA network-none n=${{ matrix.n }} ifaces=[${ifaces% }]"
          echo "FA build+run n=${{ matrix.n }} ms=$(( ($(date +%s%N) - start) / 1000000 )) size=$(docker image inspect -f '{{.Size}}' e2e/hello-${{ matrix.n }})"
          echo "FA after n=${{ matrix.n }} repos=$(docker images --format '{{.Repository}}' | sort | tr '\n' ',')"
          docker pull -q e2e-hello:v1 >/dev/null
          docker run --rm e2e-hello:v1 echo "FA mirror pull n=${{ matrix.n }}"
`

const helloActionYAML = `name: hello
inputs:
  who:
    required: true
runs:
  using: node20
  main: index.js
`

const helloActionJS = `console.log("FA action says hello to " + process.env["INPUT_WHO"] + " from node " + process.version);
`

// TestDockerJobsInImageVMs boots the Debian runner image built here
// (images/debian/build.sh: debootstrap with docker.io, git, nodejs and
// the Gitea runner), pushed to the test's registry, in a pool that asks
// for Docker, and runs dockerWorkflow's two jobs at once: each succeeds,
// runs the action, builds and runs its image, sees no network but lo
// under --network none, sees none of the other VM's images or
// containers, and pulls a Docker Hub image through the host's mirror
// (counted there; Docker Hub itself is out of reach); nothing is left on
// the host.
func TestDockerJobsInImageVMs(t *testing.T) {
	const cidr, bridge = "10.253.0.0/24", "fadock0"
	gw := gateway(t, cidr)
	rig := newGiteaImageRig(t, fmt.Sprintf("fadock%d", os.Getpid()%100000),
		"[actions]\nDEFAULT_ACTIONS_URL = self\n[server]\nROOT_URL = http://"+gw+":"+giteaPort+"/\n")
	ns, work, gitea, state := rig.ns, rig.work, rig.gitea, rig.state

	start := time.Now()
	var buildLog bytes.Buffer
	build := exec.Command("../images/debian/build.sh", cacheDir())
	build.Stderr = &buildLog
	out, err := build.Output()
	if err != nil {
		t.Fatalf("images/debian/build.sh: %v\n%s%s", err, out, buildLog.Bytes())
	}
	rootTar := strings.TrimSpace(string(out))
	fi, err := os.Stat(rootTar)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("FIGURE Debian runner root %s: %d MiB (built or cached in %s)", filepath.Base(rootTar), fi.Size()>>20, time.Since(start).Round(time.Second))
	layer, err := tarball.LayerFromFile(rootTar)
	if err != nil {
		t.Fatal(err)
	}
	imageRef := serveRegistry(t, ns) + "/e2e/debian-runner:bookworm"
	start = time.Now()
	pushImage(t, ns, imageRef, hosttest.Image(t, v1.Config{Env: []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "LANG=C.UTF-8"}}, layer))
	t.Logf("FIGURE Debian runner image pushed in %s", time.Since(start).Round(time.Millisecond))

	// Docker Hub's mirror, on the gateway's port 5000 (the guests' only
	// way to e2e-hello: nothing else serves it); it counts the pulls.
	var hubPulls atomic.Int64
	hub := hosttest.Registry()
	serveIn(t, ns, "0.0.0.0:5000", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/v2/library/e2e-hello/manifests/") {
			hubPulls.Add(1)
		}
		hub.ServeHTTP(w, r)
	}))
	pushImage(t, ns, "127.0.0.1:5000/library/e2e-hello:v1", hosttest.Image(t, v1.Config{Entrypoint: []string{"/busybox"}},
		layerFrom(t, []tarEntry{{name: "busybox", mode: 0o755, file: "/bin/busybox"}})))
	hubPulls.Store(0) // the push's own reads do not count

	cfg := rig.config("e2edock", work, bridge, cidr)
	cfg.RegistryCache = &registryCacheConfig{Mirrors: []mirrorConfig{{Registry: "docker.io", URLs: []string{"http://" + gw + ":5000"}}}}
	cfg.DrainGrace = "2m"
	p := rig.imagePool("dock", "fireactions-docker", imageRef, "IfNotPresent")
	p.MinIdle, p.Max = 2, 2
	p.VM.VCPUs, p.VM.MemoryMiB, p.VM.DiskMiB = 1, 1024, 2048
	p.Cache = &poolCache{Docker: true}
	p.Timeouts = &timeoutsConfig{Boot: "6m", Job: "15m"}
	cfg.Pools = []poolConfig{p}
	cfg.write(t, rig.cfgPath)

	for _, repo := range []string{"hello-action", "dock"} {
		gitea.api(http.MethodPost, "/api/v1/user/repos", map[string]any{"name": repo, "default_branch": "main"}, nil)
	}
	action := filepath.Join(work, "action")
	writeFile(t, filepath.Join(action, "action.yml"), 0o644, helloActionYAML)
	writeFile(t, filepath.Join(action, "index.js"), 0o644, helloActionJS)
	gitea.push(action, "ci/hello-action", "the action")

	orch := startOrchestrator(t, ns, rig.bin, rig.cfgPath, state)
	booting := time.Now()
	orch.waitFor(t, 8*time.Minute, "both VMs to be idle", func() bool { return countPhase(state, "idle") >= 2 })
	t.Logf("FIGURE two Debian image VMs with dockerd: orchestrator start -> both idle %s", time.Since(booting).Round(time.Second))

	tree := filepath.Join(work, "repo")
	writeFile(t, filepath.Join(tree, ".gitea/workflows/docker.yml"), 0o644, dockerWorkflow)
	writeFile(t, filepath.Join(tree, "Dockerfile"), 0o644, "FROM scratch\nCOPY busybox /busybox\nENTRYPOINT [\"/busybox\"]\n")
	bb, err := os.ReadFile("/bin/busybox") // Debian's busybox-static
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(tree, "busybox"), 0o755, string(bb))
	gitea.push(tree, "ci/dock", "docker jobs")
	ran := time.Now()
	orch.waitFor(t, 20*time.Minute, "both jobs to complete", func() bool {
		n := 0
		for _, j := range gitea.jobs("ci/dock") {
			if j.Status == "completed" {
				n++
			}
		}
		return n == 2
	})
	t.Logf("FIGURE two Docker jobs at once: push -> both completed %s", time.Since(ran).Round(time.Second))

	vmOf := regexp.MustCompile(`(?m)Z FA vm=(\S+)\s*$`)
	vms := map[string]bool{}
	for _, j := range gitea.jobs("ci/dock") {
		logText := gitea.raw(fmt.Sprintf("/api/v1/repos/ci/dock/actions/jobs/%d/logs", j.ID))
		m := vmOf.FindStringSubmatch(logText)
		n := regexp.MustCompile(`(?m)Z FA before n=(\w) `).FindStringSubmatch(logText)
		if j.Conclusion != "success" || m == nil || n == nil {
			t.Errorf("job %d concluded %s:\n%s", j.ID, j.Conclusion, logText)
			continue
		}
		own, other := n[1], map[string]string{"a": "b", "b": "a"}[n[1]]
		vms[m[1]] = true
		// Output lines (after the log's timestamp), not the script's text.
		for _, want := range []string{
			regexp.QuoteMeta("FA action says hello to "+own+" from node v") + `\S+`,
			regexp.QuoteMeta(fmt.Sprintf("FA before n=%s images=0 containers=0", own)),
			regexp.QuoteMeta("FA scratch says hello n=" + own),
			regexp.QuoteMeta(fmt.Sprintf("FA network-none n=%s ifaces=[lo]", own)),
			regexp.QuoteMeta(fmt.Sprintf("FA after n=%s repos=e2e/hello-%s,", own, own)),
			regexp.QuoteMeta("FA mirror pull n=" + own),
		} {
			if !regexp.MustCompile(`(?m)Z ` + want + `\s*$`).MatchString(logText) {
				t.Errorf("job %d (n=%s) lacks a line %s:\n%s", j.ID, own, want, logText)
			}
		}
		if regexp.MustCompile(`(?m)Z FA after .*e2e/hello-` + other).MatchString(logText) {
			t.Errorf("job %d (n=%s) saw the other job's image:\n%s", j.ID, own, logText)
		}
		if f := regexp.MustCompile(`(?m)Z FA build\+run n=\w ms=(\d+) size=(\d+)`).FindStringSubmatch(logText); f != nil {
			size, _ := strconv.Atoi(f[2])
			t.Logf("FIGURE VM %s: docker build + 2 docker runs %s ms, image %d KiB", m[1], f[1], size>>10)
		}
	}
	if n := hubPulls.Load(); n < 2 {
		t.Errorf("Docker Hub's mirror served %d manifests of e2e-hello, want one per job at least", n)
	} else {
		t.Logf("FIGURE Docker Hub's mirror served e2e-hello's manifest %d times", n)
	}
	if len(vms) != 2 {
		names := make([]string, 0, len(vms))
		for v := range vms {
			names = append(names, v)
		}
		sort.Strings(names)
		t.Errorf("the two jobs ran in %d VMs: %v", len(vms), names)
	}

	// The agent starts the runner once dockerd answers /_ping: the
	// runner's start is when dockerd was ready, in the guest's uptime.
	for _, l := range logLines(orch.log, regexp.MustCompile(`event=runner-started`)) {
		if m := regexp.MustCompile(`vm=(\S+) .*guest_uptime=(\S+)`).FindStringSubmatch(l); m != nil {
			t.Logf("FIGURE VM %s: guest kernel start -> dockerd ready (runner started) %s", m[1], m[2])
		}
	}
	orch.terminate(t)
	orch.waitExit(t, 3*time.Minute)
	assertNothingLeft(t, ns, gitea, state, bridge)
}
