package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// GitHub pools offer self-hosted whether the file lists it or not, once;
// other forges' pools are left alone.
func TestGitHubPoolsOfferSelfHosted(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct{ labels, want string }{
		{"[linux]", "linux self-hosted"},
		{"[Self-Hosted, linux]", "Self-Hosted linux"},
		{"[linux, self-hosted, x64]", "linux self-hosted x64"},
	} {
		c := f.mustParse(replace(t, githubYAML, "labels: [linux]", "labels: "+tc.labels))
		if got := strings.Join(c.Pools[0].Labels, " "); got != tc.want {
			t.Errorf("labels %s: got %q, want %q", tc.labels, got, tc.want)
		}
	}
	c := f.mustParse(gitlabYAML)
	if !reflect.DeepEqual(c.Pools[0].Labels, []string{"linux"}) {
		t.Errorf("gitlab pool labels = %q", c.Pools[0].Labels)
	}
}

// poll_interval defaults by whether webhooks bring demand, and is refused
// below a second or on another forge type.
func TestGitHubPollInterval(t *testing.T) {
	f := newFixture(t)
	f.write("hook", "hook-secret\n", 0o600)
	if got := f.mustParse(githubYAML).Forges[0].PollInterval; got != 30*time.Second {
		t.Errorf("without webhooks: %s, want 30s", got)
	}
	withHook := replace(t, githubYAML, "    app_id: 12345\n", "    app_id: 12345\n    webhook_secret_file: $DIR/hook\n")
	if got := f.mustParse(withHook).Forges[0].PollInterval; got != 2*time.Minute {
		t.Errorf("with webhooks: %s, want 2m", got)
	}
	set := replace(t, githubYAML, "    app_id: 12345\n", "    app_id: 12345\n    poll_interval: 5s\n")
	if got := f.mustParse(set).Forges[0].PollInterval; got != 5*time.Second {
		t.Errorf("explicit: %s, want 5s", got)
	}
	for _, tc := range []struct{ name, text, want string }{
		{"too short", replace(t, githubYAML, "    app_id: 12345\n", "    app_id: 12345\n    poll_interval: 500ms\n"),
			`forges[0] ("gh").poll_interval: 500ms is less than 1s`},
		{"not github", replace(t, gitlabYAML, "    token_file: $DIR/token\n", "    token_file: $DIR/token\n    poll_interval: 5s\n"),
			`forges[0] ("gl").poll_interval: is only for github forges, not gitlab`},
	} {
		_, err := f.parse(tc.text)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}

// cancel_runs is force unless the file says cancel or off, and is
// refused with another word or on another forge type.
func TestGitHubCancelRuns(t *testing.T) {
	f := newFixture(t)
	if got := f.mustParse(githubYAML).Forges[0].CancelRuns; got != "force" {
		t.Errorf("left out: %q, want force", got)
	}
	for _, word := range []string{"force", "cancel", "off"} {
		set := replace(t, githubYAML, "    app_id: 12345\n", "    app_id: 12345\n    cancel_runs: "+word+"\n")
		if got := f.mustParse(set).Forges[0].CancelRuns; got != word {
			t.Errorf("cancel_runs: %s read as %q", word, got)
		}
	}
	for _, tc := range []struct{ name, text, want string }{
		{"unknown word", replace(t, githubYAML, "    app_id: 12345\n", "    app_id: 12345\n    cancel_runs: fail\n"),
			`forges[0] ("gh").cancel_runs: "fail" is not one of force, cancel, off`},
		{"not github", replace(t, gitlabYAML, "    token_file: $DIR/token\n", "    token_file: $DIR/token\n    cancel_runs: off\n"),
			`forges[0] ("gl").cancel_runs: is only for github forges, not gitlab`},
	} {
		_, err := f.parse(tc.text)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}

// runner.group fits the scope: a name or id at org scope, an id at
// enterprise scope, none on a repository.
func TestGitHubRunnerGroupByScope(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct{ scope, group, want string }{
		{"org:acme", "ci", ""},
		{"org:acme", "12", ""},
		{"enterprise:bigco", "12", ""},
		{"enterprise:bigco", "ci", `"ci": an enterprise scope needs the runner group's numeric id`},
		{"repo:acme/widgets", "ci", "only with an org or enterprise scope"},
	} {
		// An enterprise scope takes a personal access token.
		pat := replace(t, githubYAML, "    app_id: 12345\n    app_private_key_file: $DIR/app.pem\n", "    token_file: $DIR/token\n")
		text := replace(t, pat, "scope: org:acme", "scope: "+tc.scope+"\n    runner: {group: "+tc.group+"}")
		_, err := f.parse(text)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s group %s: %v", tc.scope, tc.group, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), `pools[0] ("default").runner.group: `+tc.want)):
			t.Errorf("%s group %s: err = %v, want %q", tc.scope, tc.group, err, tc.want)
		}
	}
}

// demand is scaleset for org and enterprise pools and webhooks for repo
// pools unless the file says; another word, or a demand on another forge
// type, is refused naming the field.
func TestGitHubPoolDemand(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct{ scope, set, want string }{
		{"org:acme", "", "scaleset"},
		{"enterprise:bigco", "", "scaleset"},
		{"repo:acme/widgets", "", "webhooks"},
		{"org:acme", "webhooks", "webhooks"},
		{"repo:acme/widgets", "scaleset", "scaleset"},
	} {
		text := replace(t, githubYAML, "scope: org:acme", "scope: "+tc.scope)
		if strings.HasPrefix(tc.scope, "repo:") { // it polls its own repository
			text = replace(t, text, "    repos: [acme/widgets]\n", "")
		}
		if strings.HasPrefix(tc.scope, "enterprise:") { // a classic PAT there
			text = replace(t, text, "    app_id: 12345\n    app_private_key_file: $DIR/app.pem\n", "    token_file: $DIR/token\n")
		}
		if tc.set != "" {
			text = replace(t, text, "labels: [linux]", "labels: [linux]\n    demand: "+tc.set)
		}
		if got := f.mustParse(text).Pools[0].Demand; got != tc.want {
			t.Errorf("%s, demand %q: read as %q, want %q", tc.scope, tc.set, got, tc.want)
		}
	}
	if got := f.mustParse(gitlabYAML).Pools[0].Demand; got != "" {
		t.Errorf("gitlab pool demand %q, want none", got)
	}
	for _, tc := range []struct{ name, text, want string }{
		{"unknown word", replace(t, githubYAML, "labels: [linux]", "labels: [linux]\n    demand: polling"),
			`pools[0] ("default").demand: "polling" is not one of scaleset, webhooks`},
		{"not github", replace(t, gitlabYAML, "labels: [linux]", "labels: [linux]\n    demand: scaleset"),
			`pools[0] ("default").demand: is only for github pools, not gitlab`},
	} {
		_, err := f.parse(tc.text)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}

// An enterprise pool under a GitHub App is refused, naming why (GitHub
// marks the enterprise runner operations enabledForGitHubApps: false);
// under a personal access token it is taken.
func TestGitHubEnterpriseNeedsAToken(t *testing.T) {
	f := newFixture(t)
	enterprise := replace(t, githubYAML, "scope: org:acme", "scope: enterprise:bigco")
	_, err := f.parse(enterprise)
	want := `pools[0] ("default").scope: enterprise:bigco: GitHub refuses GitHub App tokens on the enterprise runner API`
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "manage_runners:enterprise") {
		t.Fatalf("App + enterprise: err = %v, want %q", err, want)
	}
	pat := replace(t, enterprise, "    app_id: 12345\n    app_private_key_file: $DIR/app.pem\n", "    token_file: $DIR/token\n")
	if _, err := f.parse(pat); err != nil {
		t.Fatalf("PAT + enterprise: %v", err)
	}
}

// An org or enterprise pool with demand: webhooks and no source of
// demand (no webhooks, no repositories to poll) is refused; either
// source, a scale set, or a repo scope (it polls its repository), is
// enough.
func TestGitHubPoolNeedsADemandSource(t *testing.T) {
	f := newFixture(t)
	f.write("hook", "hook-secret\n", 0o600)
	bare := replace(t, githubYAML, "    repos: [acme/widgets]\n", "")
	pat := func(text string) string {
		return replace(t, text, "    app_id: 12345\n    app_private_key_file: $DIR/app.pem\n", "    token_file: $DIR/token\n")
	}
	webhooksOnly := func(text string) string {
		return replace(t, text, "labels: [linux]", "labels: [linux]\n    demand: webhooks")
	}
	const want = `pools[0] ("default"): no source of demand`
	for _, tc := range []struct {
		name, text string
		ok         bool
	}{
		{"org, nothing", webhooksOnly(bare), false},
		{"enterprise, nothing", webhooksOnly(replace(t, pat(bare), "scope: org:acme", "scope: enterprise:bigco")), false},
		{"org, a scale set (the default)", bare, true},
		{"enterprise, a scale set", replace(t, pat(bare), "scope: org:acme", "scope: enterprise:bigco"), true},
		{"org, repos", githubYAML, true},
		{"org, webhooks", replace(t, bare, "    app_id: 12345\n", "    app_id: 12345\n    webhook_secret_file: $DIR/hook\n"), true},
		{"enterprise, webhooks", replace(t, replace(t, pat(bare), "scope: org:acme", "scope: enterprise:bigco"),
			"    token_file: $DIR/token\n", "    token_file: $DIR/token\n    webhook_secret_file: $DIR/hook\n"), true},
		{"repo scope", replace(t, bare, "scope: org:acme", "scope: repo:acme/widgets"), true},
	} {
		_, err := f.parse(tc.text)
		switch {
		case tc.ok && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case !tc.ok && (err == nil || !strings.Contains(err.Error(), want)):
			t.Errorf("%s: err = %v, want %q", tc.name, err, want)
		}
	}
}

// installation_id on a github pool is taken with the forge's App and
// refused without one, or on another forge type.
func TestGitHubPoolInstallationID(t *testing.T) {
	f := newFixture(t)
	text := replace(t, githubYAML, "    max: 2\n", "    max: 2\n    installation_id: 777\n")
	if got := f.mustParse(text).Pools[0].InstallationID; got != 777 {
		t.Fatalf("installation_id read as %d", got)
	}
	for _, tc := range []struct{ name, text, want string }{
		{"with a token", replace(t, text, "    app_id: 12345\n    app_private_key_file: $DIR/app.pem\n", "    token_file: $DIR/token\n"),
			`pools[0] ("default").installation_id: only with the forge's app_id (a GitHub App)`},
		{"negative", replace(t, text, "installation_id: 777", "installation_id: -2"),
			`pools[0] ("default").installation_id: -2 is negative`},
		{"gitlab", replace(t, gitlabYAML, "    max: 2\n", "    max: 2\n    installation_id: 777\n"),
			`pools[0] ("default").installation_id: is only for github pools, not gitlab`},
	} {
		if _, err := f.parse(tc.text); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}
