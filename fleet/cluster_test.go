package fleet

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/nixos-fireactions/nixos-fireactions/fleet/fleettest"
)

// joinCluster joins host to the cluster with claim TTL ttl and the given
// replicas; closed at cleanup.
func joinCluster(t testing.TB, urls []string, host string, ttl time.Duration, replicas int) *Fleet {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	f, err := Join(ctx, Options{URLs: urls, TokenFile: fleettest.TokenFile(t), HostID: host, ClaimTTL: ttl, Replicas: replicas})
	if err != nil {
		t.Fatalf("join %s: %v", host, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		f.Close(ctx)
	})
	return f
}

// streamLeader is the index of the cluster node leading bucket's stream.
func streamLeader(t *testing.T, c *fleettest.Cluster, bucket string) int {
	t.Helper()
	for i, s := range c.Servers {
		if s.JetStreamIsStreamLeader("$G", "KV_"+bucket) {
			return i
		}
	}
	t.Fatalf("no leader of bucket %s", bucket)
	return -1
}

// waitLed waits, 10 s at most, until f's claims bucket has a stream
// leader and its other replicas are current: a bucket just made on a
// loaded cluster may have none for a while, and a claim then gets no
// response from the stream (a pool tries again the next round; the
// claims this file's tests make first are no such retry).
func waitLed(t *testing.T, f *Fleet, replicas int) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := f.claims.Status(ctx)
		cancel()
		b, ok := st.(*jetstream.KeyValueBucketStatus)
		if err != nil || !ok || b.StreamInfo() == nil || b.StreamInfo().Cluster == nil {
			last = fmt.Sprintf("status: %v", err)
			continue
		}
		c := b.StreamInfo().Cluster
		current := 0
		for _, r := range c.Replicas {
			if r.Current {
				current++
			}
		}
		if c.Leader != "" && current == replicas-1 {
			return
		}
		last = fmt.Sprintf("leader %q, %d of %d other replicas current", c.Leader, current, replicas-1)
	}
	t.Fatalf("the claims bucket's stream was not led with its replicas current within 10s: %s", last)
}

// A three-node cluster with replicas 3: the buckets are kept on three
// nodes, and when the node leading the claims bucket dies, claims go on
// (new ones won, held ones refreshed, exclusivity kept). With replicas 1
// (the control) the same loss stops claiming.
func TestClusterLosesANodeAndClaimsGoOn(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		replicas int
		goesOn   bool
	}{{3, true}, {1, false}} {
		t.Run(fmt.Sprintf("replicas=%d", tc.replicas), func(t *testing.T) {
			t.Parallel()
			c := fleettest.RunCluster(t, 3)
			a := joinCluster(t, c.URLs(), "a", 3*time.Second, tc.replicas)
			b := joinCluster(t, c.URLs(), "b", 3*time.Second, tc.replicas)
			st, err := a.claims.Status(ctxT(t))
			if err != nil {
				t.Fatal(err)
			}
			if got := kvReplicas(st); got != tc.replicas {
				t.Fatalf("claims bucket has %d replicas, want %d", got, tc.replicas)
			}
			waitLed(t, a, tc.replicas)
			ctx := ctxT(t) // the claims' 20 s start once the bucket is led
			for i := range 5 {
				if ok, err := a.Claim(ctx, fmt.Sprintf("before%d", i)); !ok || err != nil {
					t.Fatalf("claim before the loss: %v %v", ok, err)
				}
			}
			c.Kill(streamLeader(t, c, ClaimsBucket))
			// Claims of new jobs: won again within a leader election.
			deadline := time.Now().Add(10 * time.Second)
			won := 0
			for i := 0; won < 5 && time.Now().Before(deadline); i++ {
				cctx, cancel := context.WithTimeout(ctx, time.Second)
				ok, _ := a.Claim(cctx, fmt.Sprintf("after%d", i))
				cancel()
				if ok {
					won++
				} else {
					time.Sleep(100 * time.Millisecond)
				}
			}
			if !tc.goesOn {
				if won == 5 {
					t.Fatalf("replicas 1: claims went on after the bucket's only node died")
				}
				return
			}
			if won < 5 {
				t.Fatalf("after losing one of three nodes: %d of 5 new claims won in 10s", won)
			}
			// Held claims are refreshed through the loss: still held after
			// two TTLs, and another host cannot take them.
			time.Sleep(2 * a.opt.ClaimTTL)
			for i := range 5 {
				job := fmt.Sprintf("before%d", i)
				if !a.Held(job) {
					t.Errorf("%s not held after the loss", job)
				}
				if ok, err := b.Claim(ctx, job); ok {
					t.Errorf("b took a's %s after the loss (%v)", job, err)
				}
			}
			if _, err := a.claims.Get(ctx, Key("before0")); err != nil && err != jetstream.ErrKeyNotFound {
				t.Errorf("read after the loss: %v", err)
			}
		})
	}
}
