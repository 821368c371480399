package gitea

import (
	"context"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/nixos-fireactions/nixos-fireactions/internal/double/giteadouble"
)

// The child's settings: set, the test is the child that calls Gitea.
const (
	proxyChildURL = "FIREACTIONS_TEST_GITEA_URL"
	proxyChildCA  = "FIREACTIONS_TEST_GITEA_CA"
)

// TestClientHonoursTheProxyFromTheEnvironment: a Gitea whose certificate
// a ca_file vouches for is reached through the HTTPS proxy the
// environment names, as GitHub and GitLab are. (Gitea's client once
// dropped the proxy whenever it had a ca_file.)
//
// net/http reads the proxy environment once a process, so the call runs
// in a child process of this test binary, started with the environment
// set.
func TestClientHonoursTheProxyFromTheEnvironment(t *testing.T) {
	if u := os.Getenv(proxyChildURL); u != "" {
		f, err := New(Options{URL: u, Token: "API-TOKEN", CAFile: os.Getenv(proxyChildCA),
			Scope: Scope{Kind: "repo", Owner: "o", Repo: "r"}, Version: "test"})
		if err != nil {
			t.Fatal(err)
		}
		jobs, err := f.QueuedJobs(context.Background())
		if err != nil || len(jobs) != 1 || jobs[0].ID != "11" {
			t.Fatalf("QueuedJobs through the proxy = %+v, %v", jobs, err)
		}
		return
	}

	fg := giteadouble.New()
	fg.Jobs = []giteadouble.Job{{ID: 11, Labels: []string{"linux"}, Status: "queued"}}
	srv := httptest.NewTLSServer(fg.Handler())
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "gitea-ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}

	// The proxy tunnels every CONNECT to the fake, whatever host it
	// names, and notes the hosts.
	var mu sync.Mutex
	var tunnelled []string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		mu.Lock()
		tunnelled = append(tunnelled, r.Host)
		mu.Unlock()
		up, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer up.Close()
		down, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer down.Close()
		_, _ = io.WriteString(down, "HTTP/1.1 200 Connection established\r\n\r\n")
		go func() { _, _ = io.Copy(up, buf) }()
		_, _ = io.Copy(down, up)
	}))
	t.Cleanup(proxy.Close)

	// example.com is a name the test server's certificate holds; only the
	// proxy can reach it here (net/http never proxies a loopback address).
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	t.Setenv("HTTPS_PROXY", proxy.URL)
	t.Setenv("https_proxy", "")
	t.Setenv("NO_PROXY", "")
	t.Setenv("no_proxy", "")
	t.Setenv(proxyChildURL, "https://example.com:"+port)
	t.Setenv(proxyChildCA, ca)
	cmd := exec.Command(os.Args[0], "-test.run=^TestClientHonoursTheProxyFromTheEnvironment$", "-test.count=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the call through the proxy failed: %v\n%s", err, out)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(tunnelled) == 0 || !strings.HasPrefix(tunnelled[0], "example.com:") {
		t.Fatalf("the proxy tunnelled %q, want example.com", tunnelled)
	}
}
