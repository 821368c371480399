package gitlab

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/internal/double/gitlabdouble"
)

// TestGroupPollSkipsUnreadableProject: a project of the group whose jobs
// the token cannot read (CI/CD disabled: 403) counts as no jobs, and the
// other projects' demand still comes through; it is logged once, not at
// every poll.
func TestGroupPollSkipsUnreadableProject(t *testing.T) {
	now := time.Now()
	var logs bytes.Buffer
	e := newEnv(t, Scope{Kind: ScopeGroup, Path: "acme"}, func(o *Options) {
		o.Now = func() time.Time { return now }
		o.Log = slog.New(slog.NewTextHandler(&logs, nil))
	})
	e.gl.DisableBuilds("acme/app")
	lib := e.gl.AddJob("acme/sub/lib", "test", nil, "true")
	for range 3 {
		js, err := e.f.QueuedJobs(context.Background())
		if err != nil || !slices.Equal(jobIDs(js), ids(lib)) {
			t.Fatalf("queued = %v, %v; want the readable project's job %d", jobIDs(js), err, lib)
		}
		now = now.Add(widePollEvery + time.Second)
	}
	if n := strings.Count(logs.String(), "project=acme/app"); n != 1 {
		t.Fatalf("the unreadable project logged %d times in 3 polls, want 1:\n%s", n, logs.String())
	}
}

// TestProjectScopeUnreadableStillFails: a project scope whose own jobs
// cannot be read is an error, not an empty queue.
func TestProjectScopeUnreadableStillFails(t *testing.T) {
	e := newEnv(t, Scope{Kind: ScopeProject, Path: "acme/app"})
	e.gl.DisableBuilds("acme/app")
	if _, err := e.f.QueuedJobs(context.Background()); err == nil {
		t.Fatal("a project scope whose jobs cannot be read polled without error")
	}
}

// TestGroupPollProjectErrors: a project gone since the project list was
// cached (404) counts as no jobs, like a 403; any other error (a 401)
// still fails the poll rather than under-count demand.
func TestGroupPollProjectErrors(t *testing.T) {
	for _, tc := range []struct {
		status int
		fails  bool
	}{{404, false}, {401, true}, {400, true}} {
		t.Run(fmt.Sprint(tc.status), func(t *testing.T) {
			e := newEnv(t, Scope{Kind: ScopeGroup, Path: "acme"})
			lib := e.gl.AddJob("acme/sub/lib", "test", nil, "true")
			gone := e.gl.AddProject("acme/gone")
			e.gl.Inject(gitlabdouble.Fault{Method: "GET", Path: fmt.Sprintf("/projects/%d/jobs", gone), Status: tc.status})
			js, err := e.f.QueuedJobs(context.Background())
			if tc.fails {
				if err == nil {
					t.Fatalf("a %d on one project's job listing went unnoticed: %v", tc.status, jobIDs(js))
				}
				return
			}
			if err != nil || !slices.Equal(jobIDs(js), ids(lib)) {
				t.Fatalf("queued = %v, %v; want %d", jobIDs(js), err, lib)
			}
		})
	}
}
