package fleet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/fleet/fleettest"
)

const ttl = 1500 * time.Millisecond

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Two hosts racing for the same jobs: each job is held by exactly one.
func TestClaimIsExclusive(t *testing.T) {
	t.Parallel()
	url := runNATS(t)
	a, b := join(t, url, "a", ttl), join(t, url, "b", ttl)
	ctx := ctxT(t)
	const n = 50
	var won [n][2]bool
	var wg sync.WaitGroup
	for h, f := range []*Fleet{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				ok, err := f.Claim(ctx, fmt.Sprintf("gitea|org\x00%d", i))
				if err != nil {
					t.Errorf("claim %d: %v", i, err)
				}
				won[i][h] = ok
			}
		}()
	}
	wg.Wait()
	for i := range n {
		if won[i][0] == won[i][1] {
			t.Errorf("job %d: a won %v, b won %v: want exactly one", i, won[i][0], won[i][1])
		}
		job := fmt.Sprintf("gitea|org\x00%d", i)
		if a.Held(job) != won[i][0] || b.Held(job) != won[i][1] {
			t.Errorf("job %d: Held disagrees with Claim", i)
		}
	}
	// A claim once won stays won on asking again.
	for i := range n {
		job := fmt.Sprintf("gitea|org\x00%d", i)
		if ok, _ := a.Claim(ctx, job); ok != won[i][0] {
			t.Errorf("job %d: a's second claim %v, first %v", i, ok, won[i][0])
		}
	}
}

// A held claim is refreshed past its TTL; a dead holder's lapses and
// another host takes the job within the TTL.
func TestDeadHostsClaimsLapse(t *testing.T) {
	t.Parallel()
	url := runNATS(t)
	a, b := join(t, url, "a", ttl), join(t, url, "b", ttl)
	ctx := ctxT(t)
	if ok, err := a.Claim(ctx, "job1"); !ok || err != nil {
		t.Fatalf("a claims job1: %v %v", ok, err)
	}
	// Refreshed: after two TTLs a still holds it and b cannot take it.
	time.Sleep(2 * ttl)
	if !a.Held("job1") {
		t.Fatal("a's claim lapsed while a lived")
	}
	if claimNow(ctx, b, "job1") {
		t.Fatal("b took a live host's claim")
	}
	kill(a)
	took := eventually(t, 3*ttl, "b takes the dead host's job", func() bool { return claimNow(ctx, b, "job1") })
	if took > ttl+ttl/2 {
		t.Errorf("b took the job %s after a died: want within the TTL %s (+ the server's expiry tick)", took, ttl)
	}
}

// A released claim (the host drains) is free at once; a forgotten one
// (its job left the queue) only once it lapses, so a host whose view of
// the queue is older than the job's start does not claim it again.
func TestDroppedClaims(t *testing.T) {
	t.Parallel()
	url := runNATS(t)
	a, b := join(t, url, "a", ttl), join(t, url, "b", ttl)
	ctx := ctxT(t)
	for _, tc := range []struct {
		job        string
		drop       func(string)
		freeAtOnce bool
	}{{"released", a.Release, true}, {"forgotten", a.Forget, false}} {
		if ok, _ := a.Claim(ctx, tc.job); !ok {
			t.Fatalf("%s: a did not claim it", tc.job)
		}
		tc.drop(tc.job)
		if a.Held(tc.job) {
			t.Fatalf("%s: a still holds it", tc.job)
		}
		if !tc.freeAtOnce && claimNow(ctx, b, tc.job) {
			t.Fatalf("%s: b took it before it lapsed", tc.job)
		}
		took := eventually(t, 3*ttl, tc.job+": b takes it", func() bool { return claimNow(ctx, b, tc.job) })
		if tc.freeAtOnce && took > ttl/2 {
			t.Errorf("%s: b took it after %s; want at once", tc.job, took)
		}
	}
}

// A host cut off from NATS claims nothing new, stops counting its claims
// before they lapse, says so, and rejoins when the link comes back.
func TestPartitionedHostClaimsNothingAndRejoins(t *testing.T) {
	t.Parallel()
	url := runNATS(t)
	p := fleettest.NewProxy(t, strings.TrimPrefix(url, "nats://"))
	var reach atomic.Int32
	ctx := ctxT(t)
	a, err := Join(ctx, Options{URLs: []string{p.URL()}, TokenFile: fleettest.TokenFile(t), HostID: "a", ClaimTTL: ttl, Observer: reachObs{&reach}})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(context.Background())
	b := join(t, url, "b", ttl)
	if ok, _ := a.Claim(ctx, "job1"); !ok {
		t.Fatal("a did not claim job1")
	}
	p.SetCut(true)
	eventually(t, 2*ttl, "a stops counting its claim", func() bool { return !a.Held("job1") })
	if !a.Held("job1") && a.Reachable() {
		eventually(t, ttl, "a says it is cut off", func() bool { return !a.Reachable() })
	}
	if reach.Load() != -1 {
		t.Errorf("observer last told reachable=%d, want -1 (cut off)", reach.Load())
	}
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	ok, err := a.Claim(cctx, "job2")
	cancel()
	if ok || !errors.Is(err, ErrUnreachable) {
		t.Fatalf("cut-off host claimed job2: %v, %v; want ErrUnreachable", ok, err)
	}
	eventually(t, 3*ttl, "b takes the cut-off host's job", func() bool { return claimNow(ctx, b, "job1") })
	p.SetCut(false)
	eventually(t, 10*time.Second, "a rejoins", a.Reachable)
	if reach.Load() != 1 {
		t.Errorf("observer last told reachable=%d, want 1", reach.Load())
	}
	if ok, err := a.Claim(ctx, "job3"); !ok || err != nil {
		t.Fatalf("rejoined host cannot claim: %v %v", ok, err)
	}
	if claimNow(ctx, a, "job1") {
		t.Fatal("rejoined host took back a job b holds")
	}
}

type reachObs struct{ v *atomic.Int32 }

func (reachObs) ClaimWon()     {}
func (reachObs) ClaimLost()    {}
func (reachObs) ClaimExpired() {}
func (o reachObs) FleetReachable(ok bool) {
	if ok {
		o.v.Store(1)
	} else {
		o.v.Store(-1)
	}
}

// Two live hosts with one host_id: the second is refused; once the first
// leaves, the id is free (positive control).
func TestSameHostIDRefused(t *testing.T) {
	t.Parallel()
	url := runNATS(t)
	a := join(t, url, "same", ttl)
	ctx := ctxT(t)
	_, err := Join(ctx, Options{URLs: []string{url}, TokenFile: fleettest.TokenFile(t), HostID: "same", ClaimTTL: ttl})
	if !errors.Is(err, ErrHostIDTaken) || !strings.Contains(err.Error(), `"same"`) {
		t.Fatalf("second host with host_id same: %v; want ErrHostIDTaken naming it", err)
	}
	a.Close(ctx)
	b, err := Join(ctx, Options{URLs: []string{url}, TokenFile: fleettest.TokenFile(t), HostID: "same", ClaimTTL: ttl})
	if err != nil {
		t.Fatalf("host_id free after the first left: %v", err)
	}
	b.Close(ctx)
}

// A restarted host (its previous run killed) gets its host_id back once
// the old presence lapses.
func TestRestartedHostRejoins(t *testing.T) {
	t.Parallel()
	url := runNATS(t)
	a := join(t, url, "h", ttl)
	kill(a)
	join(t, url, "h", ttl)
}

func TestJoinErrors(t *testing.T) {
	t.Parallel()
	url := runNATS(t)
	join(t, url, "a", ttl)
	ctx := ctxT(t)
	_, err := Join(ctx, Options{URLs: []string{url}, TokenFile: fleettest.TokenFile(t), HostID: "b", ClaimTTL: 2 * ttl})
	if err == nil || !strings.Contains(err.Error(), "claim_ttl") {
		t.Errorf("other TTL: %v; want an error naming claim_ttl", err)
	}
	_, err = Join(ctx, Options{URLs: []string{url}, TokenFile: fleettest.TokenFile(t), HostID: "b", ClaimTTL: ttl, Replicas: 3})
	if err == nil || !strings.Contains(err.Error(), "fleet.replicas 3 differs") || !strings.Contains(err.Error(), "has 1") {
		t.Errorf("other replicas: %v; want an error naming fleet.replicas", err)
	}
	_, err = Join(ctx, Options{URLs: []string{"nats://127.0.0.1:1"}, HostID: "b", ClaimTTL: ttl, ConnectTimeout: time.Second})
	if err == nil || !strings.Contains(err.Error(), "connect to NATS nats://127.0.0.1:1") {
		t.Errorf("unreachable NATS: %v; want an error naming the URL", err)
	}
}

func TestStatus(t *testing.T) {
	t.Parallel()
	url := runNATS(t)
	a := join(t, url, "a", 10*time.Second)
	join(t, url, "b", 10*time.Second)
	ctx := ctxT(t)
	a.Claim(ctx, "gitea|x\x0042")
	st, err := ReadStatus(ctx, Options{URLs: []string{url}, TokenFile: fleettest.TokenFile(t)})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Hosts) != 2 || st.Hosts[0].HostID != "a" || st.Hosts[1].HostID != "b" {
		t.Errorf("hosts %+v", st.Hosts)
	}
	if len(st.Claims) != 1 || st.Claims[0].Host != "a" || st.Claims[0].Job != "gitea|x\x0042" {
		t.Errorf("claims %+v", st.Claims)
	}
	// A member reads the hosts over its own connection (the status page).
	hosts, err := a.Hosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(hosts) != 2 || hosts[0].HostID != "a" || hosts[1].HostID != "b" || hosts[0].Since.IsZero() {
		t.Errorf("a member reads hosts %+v", hosts)
	}
}

// claimNow asks for job at the server, not from f's memory of claims
// other hosts held.
func claimNow(ctx context.Context, f *Fleet, job string) bool {
	f.mu.Lock()
	clear(f.others)
	f.mu.Unlock()
	ok, _ := f.Claim(ctx, job)
	return ok
}

// The fleet's NATS requires a token: a client without it (or with a
// wrong one) is refused; with it (the positive control) it joins and
// reads the status.
func TestJoinNeedsTheToken(t *testing.T) {
	t.Parallel()
	url := runNATS(t)
	ctx := ctxT(t)
	_, err := Join(ctx, Options{URLs: []string{url}, HostID: "a", ClaimTTL: ttl, ConnectTimeout: time.Second})
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Errorf("no token: %v; want an authorization error", err)
	}
	wrong := filepath.Join(t.TempDir(), "wrong")
	os.WriteFile(wrong, []byte("not-the-token\n"), 0o600)
	_, err = Join(ctx, Options{URLs: []string{url}, TokenFile: wrong, HostID: "a", ClaimTTL: ttl, ConnectTimeout: time.Second})
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Errorf("wrong token: %v; want an authorization error", err)
	}
	if _, err := ReadStatus(ctx, Options{URLs: []string{url}}); err == nil {
		t.Error("status without the token: read; want refused")
	}
	join(t, url, "a", ttl)
	if _, err := ReadStatus(ctx, Options{URLs: []string{url}, TokenFile: fleettest.TokenFile(t)}); err != nil {
		t.Errorf("status with the token: %v", err)
	}
}

type lostObs struct{ lost *atomic.Int32 }

func (lostObs) ClaimWon()           {}
func (o lostObs) ClaimLost()        { o.lost.Add(1) }
func (lostObs) ClaimExpired()       {}
func (lostObs) FleetReachable(bool) {}

// A claim this host holds but has not confirmed lately is not created
// again: no claim counted lost, nothing marked another host's. Asking
// for a job another host holds (the positive control) counts one lost.
func TestClaimOnOwnStaleClaimIsNoLoss(t *testing.T) {
	t.Parallel()
	url := runNATS(t)
	ctx := ctxT(t)
	var lost atomic.Int32
	a, err := Join(ctx, Options{URLs: []string{url}, TokenFile: fleettest.TokenFile(t), HostID: "a", ClaimTTL: 30 * time.Second, Observer: lostObs{&lost}})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(context.Background())
	b, err := Join(ctx, Options{URLs: []string{url}, TokenFile: fleettest.TokenFile(t), HostID: "b", ClaimTTL: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	if ok, err := a.Claim(ctx, "mine"); !ok || err != nil {
		t.Fatalf("claim: %v %v", ok, err)
	}
	a.mu.Lock()
	a.held[Key("mine")].ok = time.Now().Add(-time.Hour) // not confirmed lately
	a.mu.Unlock()
	if ok, err := a.Claim(ctx, "mine"); ok || err != nil {
		t.Errorf("claim on its own stale claim: %v %v; want false, nil", ok, err)
	}
	a.mu.Lock()
	_, marked := a.others[Key("mine")]
	a.mu.Unlock()
	if n := lost.Load(); n != 0 || marked {
		t.Errorf("own stale claim: %d counted lost, marked another host's %v; want 0, false", n, marked)
	}
	if ok, _ := b.Claim(ctx, "theirs"); !ok {
		t.Fatal("b cannot claim")
	}
	if ok, _ := a.Claim(ctx, "theirs"); ok || lost.Load() != 1 {
		t.Errorf("a job b holds: won %v, %d lost; want false, 1", ok, lost.Load())
	}
}

// A claim released just before Close is deleted by Close even when the
// loop had not yet deleted it: another host takes the job at once, not
// a TTL later (without the flush, b is refused for the TTL).
func TestCloseFlushesReleasedClaims(t *testing.T) {
	t.Parallel()
	url := runNATS(t)
	ctx := ctxT(t)
	a := join(t, url, "a", 30*time.Second)
	b := join(t, url, "b", 30*time.Second)
	if ok, err := a.Claim(ctx, "job"); !ok || err != nil {
		t.Fatalf("claim: %v %v", ok, err)
	}
	a.stopLoop() // the loop is behind: the release stays pending
	a.Release("job")
	if n := len(a.release); n != 1 {
		t.Fatalf("%d releases pending; want 1", n)
	}
	a.Close(ctx)
	if ok, err := b.Claim(ctx, "job"); !ok || err != nil {
		t.Errorf("after a released and closed: b claims %v %v; want true", ok, err)
	}
}

// behindProxy joins host a through a relay p that can drop replies,
// counting the claims a loses, and host b straight to the same server;
// a claims job first unless it is "".
func behindProxy(t *testing.T, ttl time.Duration, job string) (a, b *Fleet, p *fleettest.Proxy, lost *atomic.Int32) {
	t.Helper()
	url := runNATS(t)
	p = fleettest.NewProxy(t, strings.TrimPrefix(url, "nats://"))
	lost = new(atomic.Int32)
	a, err := Join(ctxT(t), Options{URLs: []string{p.URL()}, TokenFile: fleettest.TokenFile(t), HostID: "a", ClaimTTL: ttl, Observer: lostObs{lost}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(context.Background()) })
	if job != "" {
		if ok, err := a.Claim(ctxT(t), job); !ok || err != nil {
			t.Fatalf("claim: %v %v", ok, err)
		}
	}
	return a, join(t, url, "b", ttl), p, lost
}

// A claim whose answer is lost (the relay drops the server's reply, the
// create times out though the server made the key) is still this
// host's: it reads the key back and holds the claim, refreshes it, and
// another host cannot take the job. Without the read back the host
// believes it failed, and then that the job is another host's.
func TestClaimWithLostReplyIsKept(t *testing.T) {
	t.Parallel()
	const ttl = 3 * time.Second
	ctx := ctxT(t)
	a, b, p, lost := behindProxy(t, ttl, "")
	p.DropReplies(1, ClaimsBucket)
	cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	ok, err := a.Claim(cctx, "j1")
	cancel()
	if p.Dropped() != 1 {
		t.Fatalf("the relay dropped %d replies; want the create's", p.Dropped())
	}
	if !ok || err != nil {
		t.Fatalf("claim whose answer was lost: %v, %v; want true, nil (the key is this host's)", ok, err)
	}
	time.Sleep(2 * ttl) // refreshed on the revision read back
	if !a.Held("j1") || lost.Load() != 0 {
		t.Errorf("after 2 TTLs: held %v, %d lost; want true, 0", a.Held("j1"), lost.Load())
	}
	if ok, _ := b.Claim(ctx, "j1"); ok {
		t.Error("another host took the job whose claim's answer was lost")
	}
}

// A claim whose answer and read back are both lost fails, though the
// server made the key; the next Claim finds the key taken, reads it,
// and adopts it as this host's own: nobody else may serve the job, so
// counting it another host's would leave it unserved for a TTL.
func TestClaimWithLostReplyAndReadBackIsAdopted(t *testing.T) {
	t.Parallel()
	const ttl = 3 * time.Second
	ctx := ctxT(t)
	a, b, p, lost := behindProxy(t, ttl, "")
	p.DropReplies(2, ClaimsBucket) // the create's answer, then the read back's
	cctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	ok, err := a.Claim(cctx, "j1")
	cancel()
	if p.Dropped() != 2 || ok || err == nil {
		t.Fatalf("claim with both answers lost: %v, %v, %d dropped; want false, an error, 2", ok, err, p.Dropped())
	}
	if ok, err := a.Claim(ctx, "j1"); !ok || err != nil || lost.Load() != 0 {
		t.Fatalf("claim again: %v, %v, %d lost; want true, nil, 0 (the key is this host's)", ok, err, lost.Load())
	}
	time.Sleep(ttl) // refreshed on the revision written again
	if !a.Held("j1") || lost.Load() != 0 {
		t.Errorf("after a TTL: held %v, %d lost; want true, 0", a.Held("j1"), lost.Load())
	}
	if ok, _ := b.Claim(ctx, "j1"); ok {
		t.Error("another host took the adopted job")
	}
}

// A refresh whose answer is lost (the update applied, its reply
// dropped) leaves the host with a stale revision: the next refresh's
// CAS fails, and the host must read the key back, find its own claim
// and keep it, not count it lost while no other host may take it.
func TestRefreshWithLostReplyKeepsTheClaim(t *testing.T) {
	t.Parallel()
	const ttl = 3 * time.Second
	ctx := ctxT(t)
	a, b, p, lost := behindProxy(t, ttl, "j1")
	p.DropReplies(1, ClaimsBucket)
	eventually(t, 2*ttl, "a refresh's answer dropped", func() bool { return p.Dropped() == 1 })
	time.Sleep(ttl) // two more refreshes
	if !a.Held("j1") || lost.Load() != 0 {
		t.Errorf("after a refresh's answer was lost: held %v, %d lost; want true, 0", a.Held("j1"), lost.Load())
	}
	if ok, _ := b.Claim(ctx, "j1"); ok {
		t.Error("another host took the job")
	}
}

// A claim whose key is deleted while the answer to its refresh is lost
// (the update times out; the read back finds no key) is counted lost at
// once, not held, unconfirmed, until it expires (2/3 of the TTL).
func TestRefreshOfDeletedKeyWithLostReplyCountsLost(t *testing.T) {
	t.Parallel()
	const ttl = 3 * time.Second
	ctx := ctxT(t)
	a, b, p, lost := behindProxy(t, ttl, "j1")
	// Every refresh's answer (its CAS refused) is lost; each read back
	// finds no key.
	p.DropReplies(100, "wrong last sequence")
	if err := b.claims.Delete(ctx, Key("j1")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*ttl, "a refresh's answer dropped", func() bool { return p.Dropped() >= 1 })
	eventually(t, ttl, "the claim counted lost", func() bool { return lost.Load() == 1 })
	if a.Held("j1") {
		t.Error("a still holds a claim whose key is gone")
	}
}

// Hosts read each other's loads: a host's published room and idle VMs
// make another defer (Elsewhere); a killed host's (no presence deleted,
// no update since) are ignored once a claim TTL has passed, and a host
// that left (presence deleted) at once.
func TestLoadsOfLiveHostsOnly(t *testing.T) {
	t.Parallel()
	url := runNATS(t)
	a, b, c := join(t, url, "a", ttl), join(t, url, "b", ttl), join(t, url, "c", ttl)
	if b.Elsewhere("p", 0) {
		t.Fatal("b defers before any host published")
	}
	a.Publish("p", 4, 0)
	eventually(t, 5*time.Second, "b reads a's room", func() bool { return b.Elsewhere("p", 3) })
	if b.Elsewhere("p", 4) || b.Elsewhere("other", 0) {
		t.Error("b defers to a whose room is no more than its own, or for another pool")
	}
	c.Publish("q", 0, 1)
	eventually(t, 5*time.Second, "b reads c's idle VM", func() bool { return b.Elsewhere("q", 100) })
	kill(a)
	d := eventually(t, 3*ttl, "a's load ignored once it is dead", func() bool { return !b.Elsewhere("p", 3) })
	if d < ttl/2 {
		t.Errorf("a dead host's load ignored after %s; want about the TTL (%s)", d, ttl)
	}
	c.Close(context.Background())
	eventually(t, ttl/2, "c's load gone once it left", func() bool { return !b.Elsewhere("q", 100) })
}

// A server in operator (JWT) mode, the one that takes credentials
// files: a user of an account it does not trust, or a file that is no
// credentials, is refused with a clear error (join and status); the
// trusted account's user (positive control) joins, claims and reads.
func TestJoinNeedsTrustedCredentials(t *testing.T) {
	t.Parallel()
	op := fleettest.NewOperator(t)
	url := fleettest.RunOperatorNATS(t, op)
	ctx := ctxT(t)
	opts := func(creds string) Options {
		return Options{URLs: []string{url}, CredsFile: creds, HostID: "a", ClaimTTL: ttl, ConnectTimeout: time.Second}
	}
	_, err := Join(ctx, opts(op.ForeignCreds))
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") || !strings.Contains(err.Error(), url) {
		t.Errorf("untrusted credentials: %v; want an authorization error naming the URL", err)
	}
	if _, err := ReadStatus(ctx, opts(op.ForeignCreds)); err == nil {
		t.Error("status with untrusted credentials: read; want refused")
	}
	garbage := filepath.Join(t.TempDir(), "garbage.creds")
	os.WriteFile(garbage, []byte("not a credentials file\n"), 0o600)
	if _, err := Join(ctx, opts(garbage)); err == nil || !strings.Contains(err.Error(), "connect to NATS") {
		t.Errorf("a file that is no credentials: %v; want an error", err)
	}
	if _, err := Join(ctx, Options{URLs: []string{url}, HostID: "a", ClaimTTL: ttl, ConnectTimeout: time.Second}); err == nil {
		t.Error("no credentials: joined; want refused")
	}
	f, err := Join(ctx, opts(op.Creds))
	if err != nil {
		t.Fatalf("trusted credentials: %v", err)
	}
	defer f.Close(ctx)
	if ok, err := f.Claim(ctx, "gitea|x\x001"); !ok || err != nil {
		t.Errorf("claim with trusted credentials: %v %v", ok, err)
	}
	if _, err := ReadStatus(ctx, opts(op.Creds)); err != nil {
		t.Errorf("status with trusted credentials: %v", err)
	}
}

// A join whose answer from the server is lost on the way (the relay
// drops the reply: to making the hosts bucket, or to the first write
// of this host's presence key) tries again within Join's deadline and
// joins: a lost reply costs one try (joinTry), not the whole deadline,
// and what the lost request made is found and taken as this host's.
// Without the retries the join fails with the deadline.
func TestJoinWithALostReplyTriesAgain(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, match string }{
		{"the hosts bucket made", HostsBucket},
		{"the presence written", `"seq"`}, // a publish's acknowledgement
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := fleettest.NewProxy(t, strings.TrimPrefix(runNATS(t), "nats://"))
			p.DropReplies(1, tc.match)
			ctx, cancel := context.WithTimeout(context.Background(), 3*joinTry)
			defer cancel()
			f, err := Join(ctx, Options{URLs: []string{p.URL()}, TokenFile: fleettest.TokenFile(t), HostID: "a", ClaimTTL: ttl})
			if p.Dropped() != 1 {
				t.Fatalf("the relay dropped %d replies; want 1", p.Dropped())
			}
			if err != nil {
				t.Fatalf("join with one reply lost: %v", err)
			}
			f.Close(ctxT(t))
		})
	}
}
