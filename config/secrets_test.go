package config

import (
	"strings"
	"testing"
)

// No error message ever contains a token, whatever else is wrong and
// wherever the token comes from.
func TestErrorsNeverContainTheToken(t *testing.T) {
	viaEnv := func(text string) string {
		return replace(t, text, "token_file: $DIR/token", "token_env: GITEA_TOKEN")
	}
	tests := []struct {
		name  string
		text  string
		setup func(f *fixture)
	}{
		{"world-readable token file", minimalYAML,
			func(f *fixture) { f.write("token", testToken, 0o644) }},
		{"multi-line token file", minimalYAML,
			func(f *fixture) { f.write("token", testToken+"\n"+testToken+"\n", 0o600) }},
		{"token file read, other problems", replace(t, minimalYAML, "max: 2", "max: 0\n    scope: x"), nil},
		{"token from the environment, other problems", viaEnv(replace(t, minimalYAML, "forge: gitea", "forge: "+testToken)),
			func(f *fixture) { f.env["GITEA_TOKEN"] = testToken }},
		{"both token_file and token_env", replace(t, minimalYAML, "token_file: $DIR/token", "token_file: $DIR/token\n    token_env: GITEA_TOKEN"),
			func(f *fixture) { f.env["GITEA_TOKEN"] = testToken }},
		{"multi-line token in the environment", viaEnv(minimalYAML),
			func(f *fixture) { f.env["GITEA_TOKEN"] = testToken + "\n" + testToken }},
		{"token pasted into a pool name", replace(t, minimalYAML, "name: default", "name: "+testToken), nil},
		{"token pasted into token_env", replace(t, minimalYAML, "token_file: $DIR/token", "token_env: "+testToken), nil},
		{"webhook secret pasted into a pool name",
			replace(t, replace(t, minimalYAML, "token_file: $DIR/token", "token_env: GITEA_TOKEN\n    webhook_secret_file: $DIR/token"), "name: default", "name: "+testToken),
			func(f *fixture) { f.env["GITEA_TOKEN"] = "other-token" }},
		{"api token pasted into a label",
			replace(t, replace(t, minimalYAML, "token_file: $DIR/token", "token_env: GITEA_TOKEN"), "forges:", "api: {tokens_file: $DIR/api-tokens}\nforges:") +
				"    repos: [" + testToken + "]\n",
			func(f *fixture) {
				f.env["GITEA_TOKEN"] = "other-token"
				f.write("api-tokens", "first\n"+testToken+"\n", 0o600)
			}},
		{"multi-line webhook secret", replace(t, minimalYAML, "token_file: $DIR/token", "token_file: $DIR/token\n    webhook_secret_file: $DIR/hook"),
			func(f *fixture) { f.write("hook", testToken+"\n"+testToken, 0o600) }},
		{"world-readable app key", githubYAML,
			func(f *fixture) { f.write("app.pem", testToken, 0o644) }},
		{"app key not PEM", githubYAML,
			func(f *fixture) { f.write("app.pem", testToken, 0o600) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			if tt.setup != nil {
				tt.setup(f)
			}
			_, err := f.parse(tt.text)
			if err == nil {
				t.Fatal("Parse succeeded; want an error")
			}
			if strings.Contains(err.Error(), testToken) {
				t.Errorf("the error shows the token:\n%s", err)
			}
		})
	}
}

// The token reaches Forge.Token trimmed, from a file or the environment.
func TestTokenSources(t *testing.T) {
	tests := []struct {
		name string
		old  string
		new  string
		env  string
	}{
		{"token_file", "", "", ""},
		{"token_env", "token_file: $DIR/token", "token_env: GITEA_TOKEN", "\t" + testToken + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			if tt.env != "" {
				f.env["GITEA_TOKEN"] = tt.env
			}
			text := minimalYAML
			if tt.old != "" {
				text = replace(t, text, tt.old, tt.new)
			}
			if got := f.mustParse(text).Forges[0].Token; got != testToken {
				t.Errorf("Token = %q, want %q", got, testToken)
			}
		})
	}
}
