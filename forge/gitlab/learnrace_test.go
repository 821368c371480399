package gitlab

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// held is what the driver holds of a runner: the jobs learnt of it, and
// whether a listing of its jobs is in flight.
func (f *Forge) held(runner int64) (jobs []runnerJob, learnt, inFlight bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	jobs, learnt = f.taken[runner]
	_, inFlight = f.learning[runner]
	return jobs, learnt, inFlight
}

// runnerJobsPath is GET /runners/:id/jobs.
var runnerJobsPath = regexp.MustCompile(`^/api/v4/runners/\d+/jobs$`)

// holdingEnv is newEnv whose server answers GET /runners/:id/jobs as the
// double does at once, but sends that answer only once release is
// closed: answered is sent to when the answer is made.
func holdingEnv(t *testing.T) (e *env, answered chan struct{}, release chan struct{}) {
	t.Helper()
	answered, release = make(chan struct{}, 4), make(chan struct{})
	e = newEnv(t, Scope{Kind: ScopeProject, Path: "acme/app"})
	h := e.gl.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || !runnerJobsPath.MatchString(r.URL.Path) {
			h.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		select { // past answered's room, a request waits for its end, never the test's
		case answered <- struct{}{}:
		case <-r.Context().Done():
			return
		}
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	}))
	t.Cleanup(srv.Close)
	o := e.f.o
	o.URL = srv.URL
	f, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	e.srv, e.f = srv, f
	return e, answered, release
}

// TestRemoveWhileTheRunnersJobsAreListedLeavesNothingHeld: Retire (and
// LearnJob) run on a goroutine of their own and ask GitLab for the
// runner's jobs; a teardown that removes the runner meanwhile forgets
// its jobs. GitLab's answer, arriving after the removal, is not kept:
// else the runner's jobs would be held for good (nothing removes that
// runner again), and a host running for months would hold every such
// runner's.
func TestRemoveWhileTheRunnersJobsAreListedLeavesNothingHeld(t *testing.T) {
	for _, learn := range []string{"Retire", "LearnJob"} {
		t.Run(learn, func(t *testing.T) {
			e, answered, release := holdingEnv(t)
			ctx := context.Background()
			e.gl.AddJob("acme/app", "build", []string{"linux"}, "true")
			a := e.take(t, "fa-h-1", nil)
			id, _ := strconv.ParseInt(a.ref.ID, 10, 64)
			done := make(chan error, 1)
			go func() {
				var err error
				if learn == "Retire" {
					err = e.f.Retire(ctx, a.ref)
				} else {
					_, err = e.f.LearnJob(ctx, a.ref)
				}
				done <- err
			}()
			select {
			case <-answered:
			case <-time.After(5 * time.Second):
				t.Fatal("the runner's jobs were not asked for")
			}
			if err := e.f.Remove(ctx, a.ref); err != nil {
				t.Fatal(err)
			}
			close(release)
			if err := <-done; err != nil {
				t.Fatalf("%s: %v", learn, err)
			}
			if jobs, learnt, inFlight := e.f.held(id); learnt || inFlight {
				t.Fatalf("after the runner's removal the driver holds jobs %v (learnt %v), a listing in flight %v: want nothing", jobs, learnt, inFlight)
			}
		})
	}
}

// TestALaterLearningOfTheSameRunnerIsKept: the mark a removal leaves
// ends with the listings in flight then: it does not keep a runner's
// jobs from being learnt for good.
func TestALaterLearningOfTheSameRunnerIsKept(t *testing.T) {
	e := newEnv(t, Scope{Kind: ScopeProject, Path: "acme/app"})
	ctx := context.Background()
	e.gl.AddJob("acme/app", "build", []string{"linux"}, "true")
	a := e.take(t, "fa-h-1", nil)
	id, _ := strconv.ParseInt(a.ref.ID, 10, 64)
	e.f.forgetJobs(id) // a removal with no listing in flight leaves no mark
	if _, err := e.f.LearnJob(ctx, a.ref); err != nil {
		t.Fatal(err)
	}
	if jobs, learnt, inFlight := e.f.held(id); !learnt || len(jobs) != 1 || inFlight {
		t.Fatalf("jobs %v (learnt %v), in flight %v: want the runner's one job learnt", jobs, learnt, inFlight)
	}
}

// TestFailJobOfAJobCancelledBeforeIsErrJobEnded: a job a user (or
// GitLab) had cancelled before its runner died was not ended by FailJob:
// GitLab refuses the cancel (422), and FailJob answers ErrJobEnded (the
// pool's INFO), not success (its WARN "job failed at the forge").
func TestFailJobOfAJobCancelledBeforeIsErrJobEnded(t *testing.T) {
	for _, memo := range []bool{false, true} {
		t.Run("memo="+strconv.FormatBool(memo), func(t *testing.T) {
			e := newEnv(t, Scope{Kind: ScopeProject, Path: "acme/app"})
			ctx := context.Background()
			job := e.gl.AddJob("acme/app", "build", []string{"linux"}, "true")
			a := e.take(t, "fa-h-1", nil)
			if memo {
				m, err := e.f.LearnJob(ctx, a.ref)
				if err != nil {
					t.Fatal(err)
				}
				a.ref.Memo = m
			}
			if err := e.f.Retire(ctx, a.ref); err != nil {
				t.Fatal(err)
			}
			// A user cancels the job in GitLab's UI.
			if got, _, err := e.f.api.Jobs.CancelJob("acme/app", job); err != nil || got.Status != "canceled" {
				t.Fatalf("a user's cancel: %+v, %v", got, err)
			}
			err := e.f.FailJob(ctx, a.ref, strconv.FormatInt(job, 10), "runner exit code 2")
			if !errors.Is(err, forge.ErrJobEnded) {
				t.Fatalf("FailJob of a job cancelled before: %v, want ErrJobEnded", err)
			}
			if st := e.status(job); st != "canceled" {
				t.Fatalf("job is %s, want canceled as it was", st)
			}
		})
	}
}
