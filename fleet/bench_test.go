package fleet

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

// BenchmarkClaim is one host claiming fresh jobs one after another
// against an in-process single-node JetStream (file storage): each
// claim is one KV create, a round trip to the server. It reports the
// claims' latency p50/p99 and claims per second.
func BenchmarkClaim(b *testing.B) {
	url := runNATS(b)
	f := join(b, url, "a", 30*time.Second)
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		ok, err := f.Claim(ctx, fmt.Sprintf("gitea|org\x00%d", i))
		lat = append(lat, time.Since(t0))
		if !ok || err != nil {
			b.Fatalf("claim %d: %v %v", i, ok, err)
		}
	}
	reportLatency(b, lat, time.Since(start))
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
