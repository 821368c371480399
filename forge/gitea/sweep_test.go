package gitea

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/internal/double/forgejodouble"
)

// TestARunnerWhoseRegistrationAnswerWasLostIsRemovedAtRunTime: Gitea
// makes the runner after the driver gave up waiting for the answer (and
// after its look right then); no VM holds it. The next listing, while
// the orchestrator runs, removes it and does not report it; the host's
// other runners stay.
func TestARunnerWhoseRegistrationAnswerWasLostIsRemovedAtRunTime(t *testing.T) {
	fg, srv := newFakeGitea(t)
	d := newDriver(t, srv.URL, Scope{Kind: "instance"})
	lostRegistrationIsSwept(t, d, func(delay time.Duration) {
		fg.Mu.Lock()
		fg.RegisterDelay = delay
		fg.Mu.Unlock()
	}, fg.RunnerNames)
}

// lostRegistrationIsSwept registers a runner with d, then another whose
// answer comes after the caller gave up (slow sets the server's delay;
// names lists the runners at the server): the next listing removes the
// second and reports the first only.
func lostRegistrationIsSwept(t *testing.T, d *Forge, slow func(time.Duration), names func() []string) {
	t.Helper()
	owner, _ := forge.NewOwner("h")
	ctx := context.Background()
	kept, lost := owner.RunnerName("0123456789ab"), owner.RunnerName("ba9876543210")
	if _, err := d.Register(ctx, forge.RunnerSpec{Name: kept, Labels: []string{"l"}, Guest: guestOpts}); err != nil {
		t.Fatal(err)
	}
	slow(500 * time.Millisecond)
	rctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err := d.Register(rctx, forge.RunnerSpec{Name: lost, Labels: []string{"l"}, Guest: guestOpts})
	cancel()
	if err == nil {
		t.Fatal("a registration past its deadline succeeded")
	}
	deadline := time.Now().Add(5 * time.Second)
	for !slices.Contains(names(), lost) {
		if time.Now().After(deadline) {
			t.Fatal("the server never made the runner: the test proves nothing")
		}
		time.Sleep(20 * time.Millisecond)
	}
	rs, err := d.Runners(ctx, owner)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 || rs[0].Name != kept {
		t.Fatalf("Runners = %+v, want only %s", rs, kept)
	}
	if got := names(); len(got) != 1 || got[0] != kept {
		t.Fatalf("runners at the server %q, want only %s", got, kept)
	}
}

// TestARunnerTheDriverFailedToRemoveAfterRegisteringIsSweptAtRunTime:
// Register refuses the runner Gitea made (not ephemeral) and cannot
// remove it (Gitea answers 500): the next listing removes it and does
// not report it.
func TestARunnerTheDriverFailedToRemoveAfterRegisteringIsSweptAtRunTime(t *testing.T) {
	fg, srv := newFakeGitea(t)
	d := newDriver(t, srv.URL, Scope{Kind: "instance"})
	owner, _ := forge.NewOwner("h")
	ctx := context.Background()
	name := owner.RunnerName("0123456789ab")
	fg.Mu.Lock()
	fg.WithoutEphemeral, fg.FailDeletes = true, 1
	fg.Mu.Unlock()
	if _, err := d.Register(ctx, forge.RunnerSpec{Name: name, Labels: []string{"l"}, Guest: guestOpts}); err == nil {
		t.Fatal("a runner Gitea did not make ephemeral was taken")
	}
	if names := fg.RunnerNames(); len(names) != 1 {
		t.Fatalf("runners at Gitea %q: the failed removal should have left one (the test proves nothing)", names)
	}
	rs, err := d.Runners(ctx, owner)
	if err != nil || len(rs) != 0 {
		t.Fatalf("Runners = %+v, %v; want none", rs, err)
	}
	if names := fg.RunnerNames(); len(names) != 0 {
		t.Fatalf("runners at Gitea %q, want none", names)
	}
}

// TestAForgejoRunnerWhoseRegistrationAnswerWasLostIsRemovedAtRunTime:
// the same on Forgejo, whose runners are listed by another call.
func TestAForgejoRunnerWhoseRegistrationAnswerWasLostIsRemovedAtRunTime(t *testing.T) {
	fj := forgejodouble.New(forgejoTokens)
	srv, _ := serveForgejo(t, fj)
	d := newForgejoDriver(t, srv.URL, "ADMIN-TOKEN", FlavorForgejo, Scope{Kind: "instance"})
	lostRegistrationIsSwept(t, d, fj.SetRegisterDelay, func() []string {
		var out []string
		for _, n := range fj.Runners() {
			out = append(out, n)
		}
		return out
	})
}
