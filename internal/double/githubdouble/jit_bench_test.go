package githubdouble_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/internal/double/githubdouble"
)

// BenchmarkJITRegistrationAmongRunners: one generate-jitconfig request
// served (straight to the handler, no network) while a repository
// already has 1,000 runners, as in a burst of VM starts.
// Run: go test -run '^$' -bench JITRegistrationAmongRunners ./internal/double/githubdouble
func BenchmarkJITRegistrationAmongRunners(b *testing.B) {
	spec, err := githubdouble.LoadSpec("../../../forge/github/testdata/github-actions-runners.openapi.json")
	if err != nil {
		b.Fatal(err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	d := githubdouble.New(githubdouble.Options{Spec: spec, AppID: 9, AppKey: &key.PublicKey, PATs: []string{pat}, RunnerURL: "http://127.0.0.1:1"})
	defer d.Close()
	register := func(name string) {
		body := fmt.Appendf(nil, `{"name":%q,"runner_group_id":1,"labels":["self-hosted"]}`, name)
		req := httptest.NewRequest(http.MethodPost, "/repos/acme/widgets/actions/runners/generate-jitconfig", bytes.NewReader(body))
		req.Header.Set("Authorization", "token "+pat)
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		d.ServeHTTP(w, req)
		if w.Code != http.StatusCreated {
			b.Fatalf("register %s: %d %s", name, w.Code, w.Body)
		}
	}
	for i := range 1000 {
		register(fmt.Sprintf("fa-present-%d", i))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		register(fmt.Sprintf("fa-bench-%d", i))
	}
}
