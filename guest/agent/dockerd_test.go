package agent

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
)

// TestMain lets the test binary stand in for dockerd: run with
// FA_FAKE_DOCKERD=1, it serves the socket a real dockerd would, under the
// root its --config-file is in, and records its environment there.
func TestMain(m *testing.M) {
	if os.Getenv("FA_FAKE_DOCKERD") == "1" {
		os.Exit(fakeDockerd(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// fakeDockerdRecord is what the fake dockerd saw.
type fakeDockerdRecord struct {
	Args   []string `json:"args"`
	Env    []string `json:"env"`
	Config string   `json:"config"`
}

func fakeDockerd(args []string) int {
	var cfgPath string
	for _, a := range args {
		if p, ok := strings.CutPrefix(a, "--config-file="); ok {
			cfgPath = p
		}
	}
	root := strings.TrimSuffix(cfgPath, dockerConfigPath)
	if cfgPath == "" || root == cfgPath {
		return 2
	}
	cfg, _ := os.ReadFile(cfgPath)
	rec, _ := json.Marshal(fakeDockerdRecord{Args: args, Env: os.Environ(), Config: string(cfg)})
	os.WriteFile(filepath.Join(root, "fake-dockerd.json"), rec, 0o644)
	os.WriteFile(filepath.Join(root, "fake-dockerd.pid"), []byte(strconv.Itoa(os.Getpid())), 0o644)
	os.MkdirAll(filepath.Join(root, "var/run"), 0o755)
	ln, err := net.Listen("unix", filepath.Join(root, dockerSocketPath))
	if err != nil {
		return 1
	}
	defer ln.Close()
	if os.Getenv("FA_FAKE_DOCKERD_SILENT") != "1" { // else it listens and never answers
		go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/_ping" {
				io.WriteString(w, "OK")
				return
			}
			http.NotFound(w, r)
		}))
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-stop:
	case <-time.After(time.Minute):
	}
	return 0
}

// installDockerd puts an executable dockerd into the guest's /usr/bin.
func installDockerd(t *testing.T, root, script string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Join(root, "usr/bin"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "usr/bin/dockerd"), []byte(script), 0o755))
}

func dockerConfig(t *testing.T) agentproto.Config {
	cfg := testConfig("")
	cfg.Runner.Command = []string{"sh", "-c", `if [ -S ../../../var/run/docker.sock ]; then echo "docker socket up"; fi
echo "Runner: listening for jobs"`}
	cfg.Registry = &agentproto.Registry{
		Mirrors:   map[string][]string{"docker.io": {"http://10.200.0.1:5000"}},
		HTTPProxy: proxyWithDollars, NoProxy: noProxyWithDollars,
		Docker: true,
	}
	return cfg
}

// With Docker asked for, dockerd starts before the runner, after cgroup2
// is mounted, with the proxy in its environment and a daemon.json that
// gives its socket to the runner's group; the runner finds the socket.
func TestDockerdStartsBeforeTheRunner(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	root, sys, con := bootRegistry(t, dockerConfig(t), func(root string) {
		installDockerd(t, root, "#!/bin/sh\nFA_FAKE_DOCKERD=1 exec "+self+" \"$@\"\n")
	})
	t.Cleanup(func() { killFakeDockerd(root) })
	if !strings.Contains(con.String(), "[runner] docker socket up") {
		t.Fatalf("the runner did not find dockerd's socket:\n%s", con)
	}
	calls := sys.callList()
	mount := slices.Index(calls, "mount cgroup2 /sys/fs/cgroup")
	dockerd := slices.IndexFunc(calls, func(c string) bool { return strings.HasPrefix(c, "start dockerd ") })
	runner := slices.IndexFunc(calls, func(c string) bool { return strings.HasPrefix(c, "start sh ") })
	if mount < 0 || dockerd < mount || runner < dockerd {
		t.Fatalf("want cgroup2 mounted, then dockerd, then the runner started:\n%s", strings.Join(calls, "\n"))
	}
	var rec fakeDockerdRecord
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(root, "fake-dockerd.json"))), &rec); err != nil {
		t.Fatal(err)
	}
	if want := "--config-file=" + filepath.Join(root, dockerConfigPath); !slices.Contains(rec.Args, want) {
		t.Errorf("dockerd args %q lack %s", rec.Args, want)
	}
	for _, want := range []string{"HTTP_PROXY=" + proxyWithDollars, "http_proxy=" + proxyWithDollars, "NO_PROXY=" + noProxyWithDollars} {
		if !slices.Contains(rec.Env, want) {
			t.Errorf("dockerd's environment lacks %s: %q", want, rec.Env)
		}
	}
	var daemon map[string]any
	if err := json.Unmarshal([]byte(rec.Config), &daemon); err != nil {
		t.Fatalf("daemon.json dockerd read: %v\n%s", err, rec.Config)
	}
	if daemon["bip"] != "172.17.0.1/16" {
		t.Errorf("daemon.json bip %v, want Docker's default, which the VM's 10.200.0.0/24 leaves free", daemon["bip"])
	}
	if daemon["group"] != "1002" {
		t.Errorf("daemon.json group %v, want the runner's GID 1002", daemon["group"])
	}
	if !strings.Contains(con.String(), "docker: dockerd (pid") {
		t.Errorf("no dockerd line on the console:\n%s", con)
	}
}

// A dockerd that never opens its socket fails the boot after the wait,
// with its log on the console; the runner does not start.
func TestDockerdWithoutSocketFailsTheBoot(t *testing.T) {
	cfg := dockerConfig(t)
	cfg.Registry.DockerWait = 300 * time.Millisecond
	_, sys, con := bootRegistry(t, cfg, func(root string) {
		installDockerd(t, root, "#!/bin/sh\necho 'failed to start daemon: no cgroups'\nexit 1\n")
	})
	if !strings.Contains(con.String(), "fatal: dockerd: no answer to /_ping") || !strings.Contains(con.String(), "failed to start daemon: no cgroups") {
		t.Fatalf("want a fatal dockerd timeout with its log on the console:\n%s", con)
	}
	if slices.ContainsFunc(sys.callList(), func(c string) bool { return strings.HasPrefix(c, "start sh ") }) {
		t.Fatal("the runner started although dockerd did not")
	}
}

// A dockerd that listens but never answers its API (one still setting up,
// or stuck) is not ready: the boot fails after the wait, and the runner
// does not start.
func TestDockerdThatDoesNotAnswerFailsTheBoot(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg := dockerConfig(t)
	cfg.Registry.DockerWait = time.Second
	root, sys, con := bootRegistry(t, cfg, func(root string) {
		installDockerd(t, root, "#!/bin/sh\nFA_FAKE_DOCKERD=1 FA_FAKE_DOCKERD_SILENT=1 exec "+self+" \"$@\"\n")
	})
	t.Cleanup(func() { killFakeDockerd(root) })
	if !strings.Contains(con.String(), "fatal: dockerd: no answer to /_ping") {
		t.Fatalf("want a fatal dockerd timeout:\n%s", con)
	}
	if slices.ContainsFunc(sys.callList(), func(c string) bool { return strings.HasPrefix(c, "start sh ") }) {
		t.Fatal("the runner started although dockerd did not answer")
	}
}

// killFakeDockerd ends the fake dockerd a test started in root.
func killFakeDockerd(root string) {
	if b, err := os.ReadFile(filepath.Join(root, "fake-dockerd.pid")); err == nil {
		if pid, _ := strconv.Atoi(string(b)); pid > 0 {
			syscall.Kill(pid, syscall.SIGTERM)
		}
	}
}

// A guest without dockerd while the pool asks for Docker fails the boot,
// saying what is missing; the runner does not start.
func TestDockerAskedOfAGuestWithoutDockerd(t *testing.T) {
	_, sys, con := bootRegistry(t, dockerConfig(t), nil)
	if !strings.Contains(con.String(), "fatal: docker: the pool asks for Docker (cache.docker), but the guest root (initramfs) has no dockerd in PATH") {
		t.Fatalf("console:\n%s", con)
	}
	if slices.ContainsFunc(sys.callList(), func(c string) bool { return strings.HasPrefix(c, "start ") }) {
		t.Fatalf("started something without dockerd: %v", sys.callList())
	}
}

// The image's daemon.json keeps its keys, its own mirrors after ours,
// and its own socket group.
func TestDaemonJSONMerge(t *testing.T) {
	old := []byte(`{"log-driver": "local", "registry-mirrors": ["https://old.example/", "http://10.200.0.1:5000/"], "group": "docker", "note": "a$b"}`)
	hub := []mirror{{scheme: "http", host: "10.200.0.1:5000"}, {scheme: "https", host: "m.example", prefix: "dockerhub"}}
	b, err := dockerDaemonJSON(old, hub, "1002", nil)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	mirrors, _ := json.Marshal(got["registry-mirrors"])
	if string(mirrors) != `["http://10.200.0.1:5000","https://old.example/"]` || got["group"] != "docker" ||
		got["log-driver"] != "local" || got["note"] != "a$b" {
		t.Fatalf("merged daemon.json:\n%s", b)
	}
	if _, err := dockerDaemonJSON([]byte("{not json"), hub, "", nil); err == nil {
		t.Fatal("a broken daemon.json was overwritten silently")
	}
}

// An image's buildkitd.toml gets the mirror tables appended, unless it
// configures registries itself.
func TestBuildkitConfigOfTheImage(t *testing.T) {
	for _, c := range []struct{ image, want string }{
		{"[worker.oci]\n  gc = true", "[worker.oci]\n  gc = true\n\n# Written by fireactions-agent"},
		{"[registry.\"docker.io\"]\n  mirrors = [\"own\"]\n", "[registry.\"docker.io\"]\n  mirrors = [\"own\"]\n"},
	} {
		root := t.TempDir()
		must(t, os.MkdirAll(filepath.Join(root, "etc/buildkit"), 0o755))
		must(t, os.WriteFile(filepath.Join(root, buildkitConfigPath), []byte(c.image), 0o644))
		a := &Agent{Root: root, Sys: newFakeSys(t, root)}
		must(t, a.writeMirrorFiles(map[string][]mirror{"docker.io": {{scheme: "http", host: "h:5000"}}}))
		if got := readFile(t, filepath.Join(root, buildkitConfigPath)); !strings.HasPrefix(got, c.want) {
			t.Errorf("image file %q became:\n%s", c.image, got)
		}
	}
}

// Quotes, backslashes and control characters are escaped in TOML
// strings; '$' is not.
func TestTOMLString(t *testing.T) {
	if got := tomlString("a\"b\\c\nd$e"); got != `"a\"b\\c\u000Ad$e"` {
		t.Fatalf("tomlString: %s", got)
	}
	for _, bad := range []string{"../x", "a/b", "", ".."} {
		if registryKey(bad) == nil {
			t.Errorf("registry %q accepted as a directory name", bad)
		}
	}
	if _, err := parseMirrors(map[string][]string{"docker.io": {"ftp://x"}}); err == nil {
		t.Error("an ftp mirror was accepted")
	}
}
