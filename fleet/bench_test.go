package fleet

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/fleet/fleettest"
	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
)

// BenchmarkClaim is one host claiming fresh jobs one after another
// against an in-process single-node JetStream (file storage): each
// claim is one KV create, a round trip to the server. It reports the
// claims' latency p50/p99 and claims per second.
func BenchmarkClaim(b *testing.B) {
	benchClaims(b, join(b, runNATS(b), "a", 30*time.Second))
}

// BenchmarkClaimCluster is BenchmarkClaim against a three-node
// JetStream cluster (the real server, cluster routes over loopback) in
// a child process, whose buckets have 3 replicas: each claim waits for
// a quorum of the claims stream. Its CPU per claim is the claiming
// host's alone (the servers run in the child).
func BenchmarkClaimCluster(b *testing.B) {
	benchClaims(b, joinCluster(b, fleettest.RunClusterProcess(b, 3), "a", 30*time.Second, 3))
}

// benchClaims claims b.N fresh jobs one after another and reports the
// latency, the rate and this process's CPU per claim (with an
// in-process server, the server's CPU too).
func benchClaims(b *testing.B, f *Fleet) {
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	start, cpu0 := time.Now(), hosttest.CPUTime(b)
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		ok, err := f.Claim(ctx, fmt.Sprintf("gitea|org\x00%d", i))
		lat = append(lat, time.Since(t0))
		if !ok || err != nil {
			b.Fatalf("claim %d: %v %v", i, ok, err)
		}
	}
	cpu := hosttest.CPUTime(b) - cpu0
	reportLatency(b, lat, time.Since(start))
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/claim")
}

// BenchmarkClaimContested is a second host asking for jobs the first
// holds: each ask a KV create refused by the server (the local cache of
// others' claims is cleared so every ask goes to the server).
func BenchmarkClaimContested(b *testing.B) {
	url := runNATS(b)
	a, o := join(b, url, "a", 30*time.Second), join(b, url, "b", 30*time.Second)
	ctx := context.Background()
	const jobs = 1000
	for i := range jobs {
		if ok, err := a.Claim(ctx, fmt.Sprintf("j%d", i)); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		o.mu.Lock()
		clear(o.others)
		o.mu.Unlock()
		t0 := time.Now()
		ok, err := o.Claim(ctx, fmt.Sprintf("j%d", i%jobs))
		lat = append(lat, time.Since(t0))
		if ok || err != nil {
			b.Fatalf("contested claim %d won: %v %v", i, ok, err)
		}
	}
	reportLatency(b, lat, time.Since(start))
}

func reportLatency(b *testing.B, lat []time.Duration, total time.Duration) {
	b.StopTimer()
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) }
	b.ReportMetric(q(0.50), "p50-µs")
	b.ReportMetric(q(0.99), "p99-µs")
	b.ReportMetric(float64(len(lat))/total.Seconds(), "claims/s")
}
