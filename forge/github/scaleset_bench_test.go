package github_test

import (
	"context"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/forge/github"
)

// BenchmarkScaleSetToVMStart is BenchmarkWebhookToVMStart in scale-set
// mode: per job, the time from GitHub (the double) assigning a job to the
// pool's scale set, which wakes the listener's long poll, to the pool
// manager asking the VMM to start the job's VM: the message over local
// HTTP, the statistics turned into a queued job told to the real pool
// manager, the JIT registration for the scale set (Actions service at the
// double), VMM Start (a fake). Then the job starts and completes at the
// double, the guest reports, the runner is removed. It reports p50, p99
// and the calls per job to the double: REST and the Actions service,
// message polls included.
// Run: go test -run '^$' -bench ScaleSetToVMStart -benchtime 1000x ./forge/github
func BenchmarkScaleSetToVMStart(b *testing.B) {
	d, c := benchGitHub(b, "/api/v3", "")
	p, err := c.Pool(github.PoolOptions{Scope: github.Scope{Kind: "org", Org: "acme"}, Labels: []string{"linux", "self-hosted"},
		Demand: github.DemandScaleSet, PoolName: "bench", HostID: "t", MaxRunners: 4})
	if err != nil {
		b.Fatal(err)
	}
	f := newFarm(b, map[string]forge.Forge{"bench": p}, poolConfig("bench", "org:acme", "linux", "self-hosted"))
	defer f.close() // before the server closes: the drain ends the long poll
	waitFor := func(what string, cond func() bool) {
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				b.Fatalf("timed out: %s", what)
			}
			time.Sleep(100 * time.Microsecond)
		}
	}
	waitFor("the scale set's session", func() bool {
		s := d.ScaleSets()
		return len(s) == 1 && s[0].Session && s[0].MaxCapacity == 4
	})
	noQueue := func() bool { q, _ := p.QueuedJobs(context.Background()); return len(q) == 0 }
	one := func() time.Duration {
		j := d.QueueJob("acme/widgets", "linux") // assigned at once: the session has room
		assigned := time.Now()
		var m *fakeMachine
		select {
		case m = <-f.hv.started:
		case <-time.After(10 * time.Second):
			b.Fatalf("job %d: no VM started", j.ID)
		}
		d.SetJobStatus(j.ID, "in_progress", "")
		d.SetJobStatus(j.ID, "completed", "success")
		waitFor("the queue empty", noQueue)
		m.runJob()
		waitFor("no VM and no runner", func() bool { return len(f.m.VMs()) == 0 && len(d.Runners()) == 0 })
		return m.at.Sub(assigned)
	}
	one() // warm up: installation token, admin connection
	calls0 := d.TotalCalls()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		lat = append(lat, one())
	}
	b.StopTimer()
	reportLatency(b, d, calls0, lat)
	if extra := len(f.hv.started); extra != 0 {
		b.Fatalf("%d VMs started beyond one per job", extra)
	}
}
