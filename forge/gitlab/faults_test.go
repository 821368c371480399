package gitlab

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/internal/double/gitlabdouble"
)

func (e *env) tryRegister(name string) error {
	_, err := e.f.Register(context.Background(), forge.RunnerSpec{Name: name, Labels: []string{"linux"}, Guest: guestOpts})
	return err
}

// TestLostCreateAnswerLeavesNoRunner: GitLab created the runner but the
// answer was a 502: the driver finds and removes it at once.
func TestLostCreateAnswerLeavesNoRunner(t *testing.T) {
	e := newEnv(t, Scope{Kind: ScopeProject, Path: "acme/app"})
	e.gl.Inject(gitlabdouble.Fault{Method: "POST", Path: "/user/runners", Status: 502, After: true, Times: 1})
	if err := e.tryRegister("fa-h-lost"); err == nil {
		t.Fatal("register succeeded through a 502")
	}
	if n := len(e.gl.Runners()); n != 0 {
		t.Fatalf("%d runners left after a lost create answer", n)
	}
}

// TestTimedOutCreateLeavesNoRunner: the create request timed out and GitLab
// created the runner after the driver gave up looking: the next listing
// removes it and does not report it.
func TestTimedOutCreateLeavesNoRunner(t *testing.T) {
	e := newEnv(t, Scope{Kind: ScopeProject, Path: "acme/app"}, func(o *Options) { o.RequestTimeout = 500 * time.Millisecond })
	e.gl.Inject(gitlabdouble.Fault{Method: "POST", Path: "/user/runners", Delay: 1500 * time.Millisecond, After: true, Times: 1})
	start := time.Now()
	err := e.tryRegister("fa-h-slow")
	if err == nil {
		t.Fatal("register succeeded through a timeout")
	}
	if time.Since(start) > 1400*time.Millisecond {
		t.Fatalf("register took %s: the request timeout was not applied", time.Since(start))
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(e.gl.Runners()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the double never created the runner")
		}
		time.Sleep(50 * time.Millisecond)
	}
	owner, _ := forge.NewOwner("h")
	rs, err := e.f.Runners(context.Background(), owner)
	if err != nil || len(rs) != 0 {
		t.Fatalf("Runners = %+v, %v; want the stray runner removed, not reported", rs, err)
	}
	if n := len(e.gl.Runners()); n != 0 {
		t.Fatalf("%d runners left", n)
	}
}

func TestRateLimitedCreateIsRetriedOnce(t *testing.T) {
	e := newEnv(t, Scope{Kind: ScopeProject, Path: "acme/app"})
	e.gl.Inject(gitlabdouble.Fault{Method: "POST", Path: "/user/runners", Status: 429, Times: 1})
	if err := e.tryRegister("fa-h-429"); err != nil {
		t.Fatalf("register after one 429: %v", err)
	}
	if n := len(e.gl.Runners()); n != 1 {
		t.Fatalf("%d runners, want exactly 1", n)
	}
}

func TestPersistentRateLimitCreatesNothing(t *testing.T) {
	e := newEnv(t, Scope{Kind: ScopeProject, Path: "acme/app"})
	e.gl.Inject(gitlabdouble.Fault{Method: "POST", Path: "/user/runners", Status: 429})
	err := e.tryRegister("fa-h-429s")
	if err == nil || !strings.Contains(err.Error(), "429") {
		t.Fatalf("err = %v, want a 429", err)
	}
	if n := len(e.gl.Runners()); n != 0 || e.f.isSuspect("fa-h-429s") {
		t.Fatalf("%d runners; suspect %v: a refused create made nothing", n, e.f.isSuspect("fa-h-429s"))
	}
}

// TestServerErrorsOnIdempotentCallsAreRetried: listings and removals
// survive a few 5xx answers.
func TestServerErrorsOnIdempotentCallsAreRetried(t *testing.T) {
	e := newEnv(t, Scope{Kind: ScopeProject, Path: "acme/app"})
	e.gl.AddJob("acme/app", "build", []string{"linux"}, "true")
	r := e.register(t, "fa-h-5xx", "linux")
	e.gl.Inject(gitlabdouble.Fault{Method: "GET", Path: "/projects/2/jobs", Status: 503, Times: 2})
	if js, err := e.f.QueuedJobs(context.Background()); err != nil || len(js) != 1 {
		t.Fatalf("QueuedJobs through two 503s = %v, %v", js, err)
	}
	e.gl.Inject(gitlabdouble.Fault{Method: "DELETE", Path: "/runners/" + r.ID, Status: 500, Times: 2})
	if err := e.f.Remove(context.Background(), r.RunnerRef); err != nil {
		t.Fatalf("Remove through two 500s: %v", err)
	}
	if n := len(e.gl.Runners()); n != 0 {
		t.Fatalf("%d runners left", n)
	}
}

func TestPersistentErrorsNameTheCallNotTheToken(t *testing.T) {
	e := newEnv(t, Scope{Kind: ScopeProject, Path: "acme/app"}, func(o *Options) { o.RequestTimeout = 300 * time.Millisecond })
	r := e.register(t, "fa-h-err", "linux")
	tok := e.gl.Runners()[mustID(t, r.ID)].Token
	e.gl.Inject(gitlabdouble.Fault{Path: "/projects/2/jobs", Status: 500})
	_, err := e.f.QueuedJobs(context.Background())
	if err == nil || !strings.Contains(err.Error(), "500") || !strings.Contains(err.Error(), "acme/app") {
		t.Fatalf("err = %v", err)
	}
	// DELETE /runners/:id is refused and the removal by the runner's own
	// token (which travels in the query) times out: the error must not
	// carry the URL's token.
	e.gl.Inject(gitlabdouble.Fault{Method: "DELETE", Path: "/runners/" + r.ID, Status: 403})
	e.gl.Inject(gitlabdouble.Fault{Method: "DELETE", Path: "/runners", Delay: time.Second})
	err = e.f.Remove(context.Background(), r.RunnerRef)
	if err == nil || !slices.Contains(e.gl.Calls(), "DELETE /api/v4/runners") {
		t.Fatalf("Remove through a hanging removal by token: %v; calls %v", err, e.gl.Calls())
	}
	if !strings.Contains(err.Error(), "[redacted]") {
		t.Fatalf("the error does not show the redaction: %v", err)
	}
	for _, secret := range []string{tok, accessToken} {
		if strings.Contains(err.Error(), secret) {
			t.Fatalf("error leaks a token: %v", err)
		}
	}
}

func mustID(t *testing.T, s string) int64 {
	t.Helper()
	var n int64
	for _, c := range s {
		if c < '0' || c > '9' {
			t.Fatalf("bad id %q", s)
		}
		n = n*10 + int64(c-'0')
	}
	return n
}
