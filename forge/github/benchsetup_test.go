package github_test

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge/github"
	"github.com/nixos-fireactions/nixos-fireactions/internal/double/githubdouble"
)

// benchGitHub is what the latency benchmarks share: a double serving
// under prefix ("" for github.com's shape, "/api/v3" for GitHub
// Enterprise Server's) on a local server closed with the benchmark, with
// an App installed on org acme, and a client of that App.
func benchGitHub(b *testing.B, prefix, hookSecret string) (*githubdouble.Double, *github.Client) {
	b.Helper()
	spec, err := testSpec()
	if err != nil {
		b.Fatal(err)
	}
	var d *githubdouble.Double
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { d.ServeHTTP(w, r) }))
	b.Cleanup(srv.Close)
	d = githubdouble.New(githubdouble.Options{Spec: spec, Prefix: prefix, AppID: appID, AppKey: &testKey().PublicKey,
		RunnerURL: srv.URL + prefix})
	d.AddInstallation("Organization", "acme")
	c, err := github.New(github.Options{Name: "github", URL: srv.URL + prefix, AppID: appID, AppPrivateKey: testKeyPEM(),
		WebhookSecret: hookSecret, PollInterval: 2 * time.Minute}) // the default with webhooks
	if err != nil {
		b.Fatal(err)
	}
	return d, c
}

// reportLatency reports the p50 and p99 of lat (sorted here) and the
// calls per job to d since calls0.
func reportLatency(b *testing.B, d *githubdouble.Double, calls0 int, lat []time.Duration) {
	b.Helper()
	slices.Sort(lat)
	q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	b.ReportMetric(float64(q(0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(q(0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(d.TotalCalls()-calls0)/float64(b.N), "api-calls/job")
	b.Logf("%d jobs: p50 %s, p99 %s, max %s; calls %v", b.N, q(0.5), q(0.99), lat[len(lat)-1], d.Calls())
}
