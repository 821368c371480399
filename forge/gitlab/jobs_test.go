package gitlab

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
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

// TestGroupPollingIsBoundedAndCached: at most MaxPolledProjects projects
// per poll, round-robin, and not more often than widePollEvery.
func TestGroupPollingIsBoundedAndCached(t *testing.T) {
	now := time.Now()
	e := newEnv(t, Scope{Kind: ScopeGroup, Path: "acme"}, func(o *Options) {
		o.MaxPolledProjects = 1
		o.Now = func() time.Time { return now }
	})
	first := e.gl.AddJob("acme/app", "one", []string{"linux"}, "true")
	second := e.gl.AddJob("acme/sub/lib", "two", []string{"linux"}, "true")
	js, err := e.f.QueuedJobs(context.Background())
	if err != nil || !slices.Equal(jobIDs(js), ids(first)) {
		t.Fatalf("queued = %v, %v; want only the first project's job %d", jobIDs(js), err, first)
	}
	calls := len(e.gl.Calls())
	if _, err := e.f.QueuedJobs(context.Background()); err != nil || len(e.gl.Calls()) != calls {
		t.Fatalf("a second poll within %s made %d calls", widePollEvery, len(e.gl.Calls())-calls)
	}
	now = now.Add(widePollEvery)
	js, err = e.f.QueuedJobs(context.Background())
	if err != nil || !slices.Equal(jobIDs(js), ids(first, second)) {
		t.Fatalf("after the next poll queued = %v, %v; want both jobs", jobIDs(js), err)
	}
}

// TestGroupOfSixtyProjectsIsPolledWhole: a group of 60 projects (in
// subgroups too) whose job waits in the least recently active one, no
// webhooks: one poll sees the job, within the call budget (group lookup,
// one project-list page, one pending-jobs listing per project).
func TestGroupOfSixtyProjectsIsPolledWhole(t *testing.T) {
	e := newEnv(t, Scope{Kind: ScopeGroup, Path: "big"})
	long := time.Now().Add(-30 * 24 * time.Hour)
	e.gl.Now = func() time.Time { return long }
	e.gl.AddProject("big/sub/stale")
	job := e.gl.AddJob("big/sub/stale", "nightly", []string{"linux"}, "true")
	e.gl.Now = time.Now
	for i := range 59 {
		e.gl.AddProject(fmt.Sprintf("big/p%02d", i))
	}
	before := len(e.gl.Calls())
	js, err := e.f.QueuedJobs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(jobIDs(js), fmt.Sprint(job)) {
		t.Fatalf("queued = %v: the job of the least recently active project is missing", jobIDs(js))
	}
	if calls, budget := len(e.gl.Calls())-before, 1+1+60; calls > budget {
		t.Fatalf("one poll made %d API calls, budget %d", calls, budget)
	}
}

// TestLargeGroupIsPolledRoundRobin: with more projects than
// MaxPolledProjects, each poll lists that many and successive polls cover
// them all, every project-list page read.
func TestLargeGroupIsPolledRoundRobin(t *testing.T) {
	now := time.Now()
	e := newEnv(t, Scope{Kind: ScopeGroup, Path: "big"}, func(o *Options) {
		o.MaxPolledProjects = 50
		o.Now = func() time.Time { return now }
	})
	var want []int64
	for i := range 120 {
		e.gl.AddProject(fmt.Sprintf("big/p%03d", i))
		if i%40 == 0 {
			want = append(want, e.gl.AddJob(fmt.Sprintf("big/p%03d", i), "j", nil, "true"))
		}
	}
	var js []forge.Job
	for poll := range 3 {
		before := len(e.gl.Calls())
		var err error
		if js, err = e.f.QueuedJobs(context.Background()); err != nil {
			t.Fatal(err)
		}
		listings := 0
		for _, c := range e.gl.Calls()[before:] {
			if strings.HasSuffix(c, "/jobs") {
				listings++
			}
		}
		if listings != 50 {
			t.Fatalf("poll %d listed the jobs of %d projects, want 50", poll, listings)
		}
		now = now.Add(widePollEvery)
	}
	if !slices.Equal(jobIDs(js), ids(want...)) {
		t.Fatalf("after 3 polls queued = %v, want %v", jobIDs(js), ids(want...))
	}
}
