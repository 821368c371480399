package gitlab

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

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
