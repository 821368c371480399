package fleet

import (
	"context"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/fleet/fleettest"
)

func runNATS(t testing.TB) string { return fleettest.RunNATS(t) }

// join joins host to the fleet at url with claim TTL ttl; closed at cleanup.
func join(t testing.TB, url, host string, ttl time.Duration) *Fleet {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	f, err := Join(ctx, Options{URLs: []string{url}, TokenFile: fleettest.TokenFile(t), HostID: host, ClaimTTL: ttl})
	if err != nil {
		t.Fatalf("join %s: %v", host, err)
	}
	t.Cleanup(func() {
		select {
		case <-f.stop:
		default:
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			f.Close(ctx)
		}
	})
	return f
}

// kill ends f as kill -9 would: no claim or presence is deleted.
func kill(f *Fleet) {
	close(f.stop)
	<-f.done
	f.nc.Close()
}

// eventually waits up to d for cond.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}
