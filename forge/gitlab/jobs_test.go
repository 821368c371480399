package gitlab

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

func jobIDs(js []forge.Job) []string {
	var out []string
	for _, j := range js {
		out = append(out, j.ID)
	}
	sort.Strings(out)
	return out
}

func ids(ns ...int64) []string {
	var out []string
	for _, n := range ns {
		out = append(out, fmt.Sprint(n))
	}
	sort.Strings(out)
	return out
}

// TestQueuedJobsPerScope: a project polls itself; a group its projects,
// subgroups included; the instance every project it can see.
func TestQueuedJobsPerScope(t *testing.T) {
	for _, tc := range []struct {
		scope Scope
		want  func(app, lib, tool int64) []string
	}{
		{Scope{Kind: ScopeProject, Path: "acme/app"}, func(app, lib, tool int64) []string { return ids(app) }},
		{Scope{Kind: ScopeGroup, Path: "acme"}, func(app, lib, tool int64) []string { return ids(app, lib) }},
		{Scope{Kind: ScopeInstance}, func(app, lib, tool int64) []string { return ids(app, lib, tool) }},
	} {
		t.Run(tc.scope.Kind, func(t *testing.T) {
			e := newEnv(t, tc.scope)
			app := e.gl.AddJob("acme/app", "build", []string{"linux", "big"}, "true")
			lib := e.gl.AddJob("acme/sub/lib", "test", nil, "true")
			tool := e.gl.AddJob("other/tool", "lint", []string{"linux"}, "true")
			e.gl.SetJobStatus(e.gl.AddJob("acme/app", "done", nil), "success")
			js, err := e.f.QueuedJobs(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if got, want := jobIDs(js), tc.want(app, lib, tool); !slices.Equal(got, want) {
				t.Fatalf("queued = %v, want %v", got, want)
			}
			for _, j := range js {
				if j.ID == fmt.Sprint(app) && (!slices.Equal(j.Labels, []string{"linux", "big"}) || j.Repo != "acme/app" || j.QueuedAt.IsZero()) {
					t.Fatalf("job = %+v", j)
				}
			}
		})
	}
}

// TestGroupPollingIsBoundedAndCached: at most MaxPolledProjects projects,
// the most recently active, and not more often than widePollEvery.
func TestGroupPollingIsBoundedAndCached(t *testing.T) {
	now := time.Now()
	e := newEnv(t, Scope{Kind: ScopeGroup, Path: "acme"}, func(o *Options) {
		o.MaxPolledProjects = 1
		o.Now = func() time.Time { return now }
	})
	e.gl.AddJob("acme/app", "old", []string{"linux"}, "true")
	time.Sleep(10 * time.Millisecond)
	recent := e.gl.AddJob("acme/sub/lib", "new", []string{"linux"}, "true")
	js, err := e.f.QueuedJobs(context.Background())
	if err != nil || !slices.Equal(jobIDs(js), ids(recent)) {
		t.Fatalf("queued = %v, %v; want only the most recently active project's job %d", jobIDs(js), err, recent)
	}
	calls := len(e.gl.Calls())
	if _, err := e.f.QueuedJobs(context.Background()); err != nil || len(e.gl.Calls()) != calls {
		t.Fatalf("a second poll within %s made %d calls", widePollEvery, len(e.gl.Calls())-calls)
	}
	now = now.Add(widePollEvery)
	if _, err := e.f.QueuedJobs(context.Background()); err != nil || len(e.gl.Calls()) == calls {
		t.Fatalf("no poll after %s: %v", widePollEvery, err)
	}
}
