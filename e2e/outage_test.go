//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Issue 14, items 18 and 19: no job or runner lost around crashes and
// forge outages.

// crashConfig is a one-VM pool in its own bridge and CIDR, reconciled
// every second, no VM kept idle unless minIdle: the only VM is the one a
// job asks for.
func crashConfig(r *giteaRig, hostID, bridge, cidr, label string, minIdle int) *orchConfig {
	c := r.oneVMConfig(hostID, r.work, bridge, cidr, hostID, label, minIdle)
	c.ReconcileInterval = "1s"
	return c
}

// TestCrashWhileBootingKeepsTheJobTakenMeanwhile (item 18): the
// orchestrator is killed with SIGKILL while the VM for a queued job boots
// (its record says booting); while it is down, the guest's runner takes
// the job; it starts again (as systemd would, after 5 s or more): the VM is
// adopted, not killed, and the job completes in it. Then a drain leaves
// nothing behind.
func TestCrashWhileBootingKeepsTheJobTakenMeanwhile(t *testing.T) {
	r := newGiteaRig(t, "fa-crash")
	gitea, state, work, ns, bin := r.gitea, r.state, r.work, r.ns, r.bin
	cfg := crashConfig(r, "crash", "facrash0", "10.223.0.0/24", "fireactions-crash", 0)

	first := r.start(cfg)
	gitea.api(http.MethodPost, "/api/v1/user/repos", map[string]any{"name": "taken", "default_branch": "main"}, nil)
	tree := filepath.Join(work, "repo")
	writeFile(t, filepath.Join(tree, ".gitea/workflows/taken.yml"), 0o644, strings.ReplaceAll(slowWorkflow, "fireactions-chaos", "fireactions-crash"))
	gitea.push(tree, "ci/taken", "a job taken while the orchestrator is down")

	booting := first.waitVM(t, 2*time.Minute, "the job's VM booting", "booting")
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.exited
	killed := time.Now()
	if phase := vmDirs(state)[booting]; phase != "booting" {
		t.Fatalf("vm %s recorded %q at the crash, want booting", booting, phase)
	}
	t.Logf("killed the orchestrator with SIGKILL while vm %s was booting", booting)

	// While no orchestrator runs, the guest boots and its runner takes
	// the job.
	waitFor(t, 3*time.Minute, "the guest's runner to take the job", func() bool {
		js := gitea.jobs("ci/taken")
		return len(js) == 1 && js[0].Status != "queued" && js[0].Status != "waiting"
	})
	if gap := time.Since(killed); gap < 5*time.Second {
		time.Sleep(5*time.Second - gap)
	}
	t.Logf("the job was taken by %s; restarting %s after the crash", gitea.jobs("ci/taken")[0].RunnerName, time.Since(killed).Round(time.Second))

	second := startOrchestrator(t, ns, bin, r.cfgPath, state)
	second.waitFor(t, 3*time.Minute, "the job taken meanwhile to complete", func() bool {
		runs := gitea.runs("ci/taken")
		return len(runs) == 1 && runs[0].Status == "completed"
	})
	if c := gitea.runs("ci/taken")[0].Conclusion; c != "success" {
		t.Fatalf("the job taken while the orchestrator was down ended %q", c)
	}
	logs := gitea.raw(fmt.Sprintf("/api/v1/repos/ci/taken/actions/jobs/%d/logs", gitea.jobs("ci/taken")[0].ID))
	if !strings.Contains(logs, "fireactions-vm="+booting+" done") {
		t.Fatalf("the job did not finish in the adopted vm %s:\n%s", booting, logs)
	}
	if len(logLines(second.log, regexpMust(`adopted vm.*vm=`+booting))) == 0 {
		t.Fatalf("the restarted orchestrator did not adopt vm %s", booting)
	}
	second.waitFor(t, time.Minute, "the VM gone after its job", func() bool { return len(vmDirs(state)) == 0 })
	second.terminate(t)
	second.waitExit(t, time.Minute)
	assertNothingLeft(t, ns, gitea, state, "facrash0")
}

// TestForgeOutageDuringTeardownLeavesNoRunner (item 19): Gitea refuses
// the orchestrator's connections for 30 s while a VM is torn down, so the
// removal of its runner fails past its immediate retries; once Gitea is
// back, the still running orchestrator removes it: no runner of this host
// is left at Gitea, without a restart.
func TestForgeOutageDuringTeardownLeavesNoRunner(t *testing.T) {
	r := newGiteaRig(t, "fa-crash")
	gitea, state, work, ns, bin := r.gitea, r.state, r.work, r.ns, r.bin
	cfg := crashConfig(r, "outage", "faout0", "10.224.0.0/24", "fireactions-outage", 1)
	sock := filepath.Join(work, "api.sock")
	cli := func(args ...string) string {
		return run(t, filepath.Join(bin, "fireactions"), append(args, "--socket", sock)...)
	}

	o := r.start(cfg)
	idle := o.waitVM(t, 3*time.Minute, "an idle VM", "idle")
	runners := func() []string {
		var r struct {
			Runners []struct {
				Name string `json:"name"`
			} `json:"runners"`
		}
		gitea.api(http.MethodGet, "/api/v1/admin/actions/runners?limit=50", nil, &r)
		var out []string
		for _, x := range r.Runners {
			if strings.HasPrefix(x.Name, "fa-outage-") {
				out = append(out, x.Name)
			}
		}
		return out
	}
	if got := runners(); len(got) != 1 || got[0] != "fa-outage-"+idle {
		t.Fatalf("runners at Gitea before the outage: %v, want fa-outage-%s", got, idle)
	}
	cli("pools", "pause", "outage") // no replacement VM

	// The outage: Gitea refuses the orchestrator's connections (to
	// 127.0.0.1:3000 inside the namespace); guests' traffic is not
	// concerned.
	nft := func(script string) {
		cmd := exec.Command("ip", "netns", "exec", ns.name, "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(script)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nft: %v: %s", err, out)
		}
	}
	nft(`table inet faoutage {
	chain out {
		type filter hook output priority 0;
		ip daddr 127.0.0.1 tcp dport ` + giteaPort + ` reject with tcp reset
	}
}`)
	restored := false
	restore := func() {
		if !restored {
			restored = true
			nft("delete table inet faoutage")
		}
	}
	t.Cleanup(restore)
	outage := time.Now()
	cli("kill", idle)
	o.waitFor(t, time.Minute, "the killed VM's teardown to give up on its runner", func() bool {
		return len(logLines(o.log, regexpMust(`(remove runner|runner removal).*vm=`+idle))) > 0
	})
	if d := 30*time.Second - time.Since(outage); d > 0 {
		time.Sleep(d)
	}
	restore()
	t.Logf("Gitea reachable again after %s", time.Since(outage).Round(time.Second))
	back := time.Now()
	o.waitFor(t, 90*time.Second, "no runner of this host left at Gitea", func() bool { return len(runners()) == 0 })
	t.Logf("0 runners at Gitea %s after the outage ended", time.Since(back).Round(time.Second))
	o.waitFor(t, 30*time.Second, "the VM's record gone", func() bool { return len(vmDirs(state)) == 0 })
	o.terminate(t)
	o.waitExit(t, time.Minute)
	assertNothingLeft(t, ns, gitea, state, "faout0")
}
