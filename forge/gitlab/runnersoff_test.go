package gitlab

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/internal/double/gitlabdouble"
)

// TestWideScopesSkipProjectsThatTurnedTheirRunnersOff: a project that
// turned group runners off is no demand for a group scope, and one that
// turned instance runners off none for an instance scope (GitLab gives
// their jobs to no runner of ours); turning the other kind off changes
// nothing (the positive control: the job is counted where it can run).
func TestWideScopesSkipProjectsThatTurnedTheirRunnersOff(t *testing.T) {
	for _, tc := range []struct {
		scope         Scope
		shared, group bool // what acme/app turns off
		counted       bool
	}{
		{Scope{Kind: ScopeGroup, Path: "acme"}, false, true, false},
		{Scope{Kind: ScopeGroup, Path: "acme"}, true, false, true},
		{Scope{Kind: ScopeInstance}, true, false, false},
		{Scope{Kind: ScopeInstance}, false, true, true},
	} {
		var logs bytes.Buffer
		e := newEnv(t, tc.scope, func(o *Options) { o.Log = slog.New(slog.NewTextHandler(&logs, nil)) })
		e.gl.TurnOffRunners("acme/app", tc.shared, tc.group)
		app := e.gl.AddJob("acme/app", "test", nil, "true")
		lib := e.gl.AddJob("acme/sub/lib", "test", nil, "true")
		want := ids(lib)
		if tc.counted {
			want = ids(app, lib)
		}
		js, err := e.f.QueuedJobs(context.Background())
		got := jobIDs(js)
		slices.Sort(got)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("%s scope, acme/app turned off shared=%v group=%v: queued %v, %v; want %v", tc.scope.Kind, tc.shared, tc.group, got, err, want)
		}
		if strings.Contains(logs.String(), "not shown whether") {
			t.Fatalf("an administrator's token sees the settings, yet the log says it does not:\n%s", logs.String())
		}
	}
}

// TestGroupScopeCountsProjectsWhoseSettingItCannotSee: with a token of a
// Developer, GitLab shows no group_runners_enabled; the project's jobs
// count as demand and the log says so once over several listings.
func TestGroupScopeCountsProjectsWhoseSettingItCannotSee(t *testing.T) {
	now := time.Now()
	var logs bytes.Buffer
	e := newEnv(t, Scope{Kind: ScopeGroup, Path: "acme"}, func(o *Options) {
		o.Token = "glpat-developer"
		o.Now = func() time.Time { return now }
		o.Log = slog.New(slog.NewTextHandler(&logs, nil))
	})
	e.gl.AddToken("glpat-developer", gitlabdouble.Grant{Scopes: []string{"api", "create_runner"}, Role: gitlabdouble.Developer})
	e.gl.TurnOffRunners("acme/app", false, true)
	app := e.gl.AddJob("acme/app", "test", nil, "true")
	for range 2 {
		js, err := e.f.QueuedJobs(context.Background())
		if err != nil || !slices.Contains(jobIDs(js), ids(app)[0]) {
			t.Fatalf("queued %v, %v; want acme/app's job %d counted", jobIDs(js), err, app)
		}
		now = now.Add(projectListTTL + time.Second) // list the projects again
	}
	if n := strings.Count(logs.String(), "not shown whether projects turned"); n != 1 {
		t.Fatalf("said %d times, want once:\n%s", n, logs.String())
	}
}

// hookOfProject2 polls the scope once (so its listing knows which
// projects turned its runners off), then delivers the documented pending
// payload of job 7 of acme/app (project 2), and returns what the scope
// told its pool.
func hookOfProject2(t *testing.T, e *env, between func()) []forge.QueueChange {
	t.Helper()
	var c changes
	e.f.NotifyQueue(c.add)
	if id := e.gl.AddJob("acme/app", "unit-tests", []string{"linux"}, "true"); id != 7 {
		t.Fatalf("job id %d: the testdata payload names job 7 of project 2", id)
	}
	// Job 7 is not yet pending when the scope polls; another job of the
	// project is (an instance scope learns of runners turned off from
	// the pending jobs it lists).
	e.gl.SetJobStatus(7, "created")
	e.gl.AddJob("acme/app", "lint", []string{"linux"}, "true")
	if _, err := e.f.QueuedJobs(context.Background()); err != nil {
		t.Fatal(err)
	}
	c.take()
	between()
	e.gl.SetJobStatus(7, "pending")
	if code, _ := delivery(e.f, "Job Hook", "hook-secret", "uuid-off", readTestdata(t, "job-hook-pending.json")); code != http.StatusNoContent {
		t.Fatalf("pending hook: %d", code)
	}
	return c.take()
}

func toldQueued(cs []forge.QueueChange, id string) bool {
	return slices.ContainsFunc(cs, func(c forge.QueueChange) bool { return c.Queued && c.Job.ID == id })
}

// TestHookOfARunnersOffProjectBootsNothing: a pending-job webhook of a
// project that turned the scope's runners off tells the pool nothing
// queued (GitLab would give the job to none of ours), for a group and an
// instance scope; the same hook of a project with them on does (the
// positive control).
func TestHookOfARunnersOffProjectBootsNothing(t *testing.T) {
	for _, tc := range []struct {
		scope Scope
		off   bool
	}{
		{Scope{Kind: ScopeGroup, Path: "acme"}, true},
		{Scope{Kind: ScopeInstance}, true},
		{Scope{Kind: ScopeGroup, Path: "acme"}, false},
		{Scope{Kind: ScopeInstance}, false},
	} {
		now := time.Now()
		e := newEnv(t, tc.scope, func(o *Options) { o.Now = func() time.Time { return now } })
		if tc.off {
			e.gl.TurnOffRunners("acme/app", tc.scope.Kind == ScopeInstance, tc.scope.Kind == ScopeGroup)
		}
		told := hookOfProject2(t, e, func() { now = now.Add(time.Second) })
		if got := toldQueued(told, "7"); got == tc.off {
			t.Errorf("%s scope, acme/app runners off %v: told job 7 queued %v (%+v)", tc.scope.Kind, tc.off, got, told)
		}
		e.f.mu.Lock()
		_, hooked := e.f.hooked[7]
		e.f.mu.Unlock()
		if hooked == tc.off {
			t.Errorf("%s scope, runners off %v: job 7 kept as hooked demand %v", tc.scope.Kind, tc.off, hooked)
		}
	}
}

// TestHookOfAProjectThatTurnedRunnersBackOnIsDemand: the group's listing
// (cached for projectListTTL) found acme/app with group runners off; the
// project turns them back on and a job's webhook comes within the TTL:
// the job is demand at once, and the next poll lists the project again.
func TestHookOfAProjectThatTurnedRunnersBackOnIsDemand(t *testing.T) {
	now := time.Now()
	e := newEnv(t, Scope{Kind: ScopeGroup, Path: "acme"}, func(o *Options) { o.Now = func() time.Time { return now } })
	e.gl.TurnOffRunners("acme/app", false, true)
	told := hookOfProject2(t, e, func() {
		now = now.Add(time.Second)
		e.gl.TurnOffRunners("acme/app", false, false)
	})
	if !toldQueued(told, "7") {
		t.Fatalf("job 7 of a project that turned group runners back on: told %+v, want queued", told)
	}
	now = now.Add(widePollEvery + time.Second) // within projectListTTL
	js, err := e.f.QueuedJobs(context.Background())
	if err != nil || !slices.Contains(jobIDs(js), "7") {
		t.Fatalf("next poll: %v, %v; want job 7", jobIDs(js), err)
	}
	e.f.mu.Lock()
	delete(e.f.hooked, 7)
	e.f.mu.Unlock()
	now = now.Add(widePollEvery + time.Second)
	if js, _ := e.f.QueuedJobs(context.Background()); !slices.Contains(jobIDs(js), "7") {
		t.Fatalf("a poll without the webhook's help: %v; want job 7 (the project listed again)", jobIDs(js))
	}
}

// TestGroupScopeSkipsProjectsSharedWithTheGroup: other/tool is shared
// with acme (GitLab lists it among acme's projects by default), but acme's
// group runners do not serve it: its job is no demand of the acme scope,
// while acme's own project's job is (the positive control).
func TestGroupScopeSkipsProjectsSharedWithTheGroup(t *testing.T) {
	e := newEnv(t, Scope{Kind: ScopeGroup, Path: "acme"})
	e.gl.ShareProject("other/tool", "acme")
	tool := e.gl.AddJob("other/tool", "test", nil, "true")
	app := e.gl.AddJob("acme/app", "test", nil, "true")
	js, err := e.f.QueuedJobs(context.Background())
	if got := jobIDs(js); err != nil || !slices.Equal(got, ids(app)) {
		t.Fatalf("queued %v, %v; want only acme/app's job %d (not other/tool's %d)", got, err, app, tool)
	}
}
