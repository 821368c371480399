package github_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/api"
	"github.com/nixos-fireactions/nixos-fireactions/forge"
	"github.com/nixos-fireactions/nixos-fireactions/forge/github"
	"github.com/nixos-fireactions/nixos-fireactions/internal/double/githubdouble"
	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
)

// BenchmarkWebhookToVMStart measures, per workflow_job delivery, the time
// from the delivery reaching the orchestrator's webhook endpoint (HTTP,
// signature check, queue update) to the pool manager asking the VMM to
// start the job's VM (including the JIT registration at the GitHub
// double over local HTTP). The VMM is a fake. Each iteration is one job:
// queued delivery, VM start, then the job's in_progress and completed
// deliveries, the guest's runner ready and done, the runner removed.
// Run: go test -run '^$' -bench WebhookToVMStart -benchtime 1000x ./forge/github
// It reports p50 and p99 latency and the GitHub API calls per job.
func BenchmarkWebhookToVMStart(b *testing.B) {
	d, c := benchGitHub(b, "", hookSecret)
	p, err := c.Pool(github.PoolOptions{Scope: github.Scope{Kind: "org", Org: "acme"}, Repos: []string{"acme/widgets"},
		Labels: []string{"linux", "self-hosted"}})
	if err != nil {
		b.Fatal(err)
	}
	f := newFarm(b, map[string]forge.Forge{"bench": p}, poolConfig("bench", "org:acme", "linux", "self-hosted"))
	hooks := httptest.NewServer(api.NewHandler(api.Options{Backend: f.m, Webhooks: map[string]forge.WebhookReceiver{"github": c}}, false))
	defer hooks.Close()
	template := examplePayloads(b)[helloQueued]
	post := func(i int, action, status string) {
		body := bytes.Replace(template, []byte(`"action": "queued"`), []byte(`"action": "`+action+`"`), 1)
		body = bytes.Replace(body, []byte(`"id": 289782451`), []byte(fmt.Sprintf(`"id": %d`, 1_000_000+i)), 1)
		body = bytes.Replace(body, []byte(`"status": "queued"`), []byte(`"status": "`+status+`"`), 1)
		body = bytes.Replace(body, []byte(`"ubuntu-latest"`), []byte(`"linux"`), 1)
		body = bytes.ReplaceAll(body, []byte("Codertocat/Hello-World"), []byte("acme/widgets"))
		req, _ := http.NewRequest(http.MethodPost, hooks.URL+"/webhooks/github", bytes.NewReader(body))
		req.Header.Set("X-GitHub-Event", "workflow_job")
		req.Header.Set("X-GitHub-Delivery", fmt.Sprintf("bench-%d-%s", i, action))
		req.Header.Set("X-Hub-Signature-256", githubdouble.SignPayload(hookSecret, body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("delivery %d %s: %v %v", i, action, err, resp)
		}
		resp.Body.Close()
	}
	if !strings.Contains(string(template), `"id": 289782451`) {
		b.Fatal("the example payload changed")
	}
	waitIdle := func() {
		deadline := time.Now().Add(10 * time.Second)
		for len(f.m.VMs()) > 0 || len(d.Runners()) > 0 {
			if time.Now().After(deadline) {
				b.Fatalf("VMs %d, runners %d left", len(f.m.VMs()), len(d.Runners()))
			}
			time.Sleep(time.Millisecond)
		}
	}
	// Warm up: the first reconciler round, the App's installation token.
	post(-1, "queued", "queued")
	m := <-f.hv.started
	post(-1, "completed", "completed")
	m.runJob()
	waitIdle()

	calls0 := d.TotalCalls()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		sent := time.Now()
		post(i, "queued", "queued")
		var m *fakeMachine
		select {
		case m = <-f.hv.started:
		case <-time.After(10 * time.Second):
			b.Fatalf("delivery %d: no VM started", i)
		}
		lat = append(lat, m.at.Sub(sent))
		post(i, "in_progress", "in_progress")
		post(i, "completed", "completed")
		m.runJob()
		waitIdle()
	}
	b.StopTimer()
	reportLatency(b, d, calls0, lat)
	if extra := len(f.hv.started); extra != 0 {
		b.Fatalf("%d VMs started beyond one per job", extra)
	}
}

// BenchmarkWebhookBurst measures a burst: 1,000 signed workflow_job
// "queued" deliveries, for 1,000 distinct jobs, POSTed by 4 senders at
// once to the orchestrator's real API handler, and the real pool manager
// (max 1,000, the default 2 s reconcile period) starting one VM per job:
// JIT registration at the GitHub double over local HTTP, the VM's state
// files on the normal disk (b.TempDir, durable writes), a fake VMM. The
// clock runs from the first delivery to the 1,000th VMM Start. It reports
// VM starts per second.
// Run: go test -run '^$' -bench WebhookBurst -benchtime 3x ./forge/github
func BenchmarkWebhookBurst(b *testing.B) {
	const jobs, senders = 1000, 4
	spec, err := testSpec()
	if err != nil {
		b.Fatal(err)
	}
	template := examplePayloads(b)[helloQueued]
	if !strings.Contains(string(template), `"id": 289782451`) {
		b.Fatal("the example payload changed")
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: senders * 2}}
	var total, cpu time.Duration
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		b.StopTimer()
		var d *githubdouble.Double
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { d.ServeHTTP(w, r) }))
		d = githubdouble.New(githubdouble.Options{Spec: spec, AppID: appID, AppKey: &testKey().PublicKey, RunnerURL: srv.URL})
		d.AddInstallation("Organization", "acme")
		c, err := github.New(github.Options{Name: "github", URL: srv.URL, AppID: appID, AppPrivateKey: testKeyPEM(),
			WebhookSecret: hookSecret, PollInterval: 2 * time.Minute})
		if err != nil {
			b.Fatal(err)
		}
		p, err := c.Pool(github.PoolOptions{Scope: github.Scope{Kind: "org", Org: "acme"}, Repos: []string{"acme/widgets"},
			Labels: []string{"linux", "self-hosted"}})
		if err != nil {
			b.Fatal(err)
		}
		pc := poolConfig("bench", "org:acme", "linux", "self-hosted")
		pc.Max = jobs + 1
		f := newFarmWith(b, b.TempDir(), 2*time.Second, map[string]forge.Forge{"bench": p}, pc)
		hooks := httptest.NewServer(api.NewHandler(api.Options{Backend: f.m, Webhooks: map[string]forge.WebhookReceiver{"github": c}}, false))
		post := func(i int) error {
			body := bytes.Replace(template, []byte(`"id": 289782451`), []byte(fmt.Sprintf(`"id": %d`, 1_000_000+i)), 1)
			body = bytes.Replace(body, []byte(`"ubuntu-latest"`), []byte(`"linux"`), 1)
			body = bytes.ReplaceAll(body, []byte("Codertocat/Hello-World"), []byte("acme/widgets"))
			req, _ := http.NewRequest(http.MethodPost, hooks.URL+"/webhooks/github", bytes.NewReader(body))
			req.Header.Set("X-GitHub-Event", "workflow_job")
			req.Header.Set("X-GitHub-Delivery", fmt.Sprintf("burst-%d", i))
			req.Header.Set("X-Hub-Signature-256", githubdouble.SignPayload(hookSecret, body))
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("delivery %d: %s", i, resp.Status)
			}
			return nil
		}
		// Warm up: the first reconciler round, the App's installation token.
		if err := post(-1); err != nil {
			b.Fatal(err)
		}
		select {
		case <-f.hv.started:
		case <-time.After(30 * time.Second):
			b.Fatalf("warm-up: no VM started in 30 s; VMs %v, runners %d", f.m.Phases(), len(d.Runners()))
		}
		b.StartTimer()
		start, cpu0 := time.Now(), hosttest.CPUTime(b)
		errs := make(chan error, senders)
		for s := 0; s < senders; s++ {
			go func() {
				for i := s; i < jobs; i += senders {
					if err := post(i); err != nil {
						errs <- err
						return
					}
				}
				errs <- nil
			}()
		}
		timeout := time.After(2 * time.Minute)
		for got := 0; got < jobs; got++ {
			select {
			case <-f.hv.started:
			case err := <-errs:
				if err != nil {
					b.Fatal(err)
				}
				got--
			case <-timeout:
				b.Fatalf("%d of %d VMs started", got, jobs)
			}
		}
		elapsed, used := time.Since(start), hosttest.CPUTime(b)-cpu0
		b.StopTimer()
		total += elapsed
		cpu += used
		b.Logf("burst %d: %d VM starts in %s: %.0f/s; %s CPU, %.0f µs per start", n, jobs, elapsed.Round(time.Millisecond),
			jobs/elapsed.Seconds(), used.Round(time.Millisecond), float64(used.Microseconds())/jobs)
		hooks.Close()
		f.close()
		srv.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(jobs*b.N)/total.Seconds(), "starts/s")
	// CPU time of the whole process (orchestrator, senders and GitHub
	// double) per start: what the rate would be on 2 idle cores is about
	// 2 s / this, whatever else shares the machine.
	b.ReportMetric(float64(cpu.Microseconds())/float64(jobs*b.N), "cpu-µs/start")
}
