//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/deploy/monitoring"
)

// TestStatusPageInABrowser: an orchestrator with a real QEMU guest (the
// GitLab double's rig: pool alpha keeps one VM idle, pool beta has none)
// serves /status on its TCP API. Without the API's token, or with a wrong
// one, the page is refused (401). Debian's headless chromium loads it
// through a proxy that adds the token (the browser's command line cannot
// set a header): the DOM lists exactly the VMs /api/v1/vms lists, both
// pools' names and the boot chart of the VM that booted; a screenshot of
// it, read back by OCR (Debian's tesseract), shows both pools' names and no
// pool that does not exist. The page names no secret the host
// holds (the API token, the GitLab token). And every metric the alert
// rules and the Grafana dashboard read is in this orchestrator's /metrics.
func TestStatusPageInABrowser(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is absent: run scripts/install-deps.sh (Debian's chromium)")
	}
	tesseract, err := exec.LookPath("tesseract")
	if err != nil {
		t.Fatal("tesseract is absent: run scripts/install-deps.sh (Debian's tesseract-ocr)")
	}
	const apiPort, metricsPort = "8497", "9497"
	r := newGitLabRig(t, "fst")
	token := "api-" + randHex(t)
	writeFile(t, filepath.Join(r.work, "api-tokens"), 0o600, token+"\n")
	cfg := r.config("status", "fastat0", "10.255.0.0/24")
	cfg.API.Listen, cfg.API.TokensFile = "127.0.0.1:"+apiPort, filepath.Join(r.work, "api-tokens")
	cfg.Metrics = &metricsConfig{Listen: "127.0.0.1:" + metricsPort}
	alpha := r.pool("status-alpha", []string{glTag}, 1)
	alpha.MinIdle = 1
	cfg.Pools = []poolConfig{alpha, r.pool("status-beta", []string{"status-beta-only"}, 1)}
	o := r.start(cfg)
	o.waitFor(t, 3*time.Minute, "alpha's idle VM", func() bool { return countPhase(r.state, "idle") >= 1 })

	c := r.ns.httpClient()
	base := "http://127.0.0.1:" + apiPort
	get := func(path, auth string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
		return resp.StatusCode, string(b)
	}
	for _, auth := range []string{"", "Bearer wrong-" + token} {
		if code, body := get("/status", auth); code != http.StatusUnauthorized || strings.Contains(body, "<html") {
			t.Fatalf("GET /status with %q: %d, want 401 without the page", auth, code)
		}
	}
	// Positive control: the token opens the page.
	if code, body := get("/status", "Bearer "+token); code != http.StatusOK || !strings.Contains(body, "status-alpha") {
		t.Fatalf("GET /status with the token: %d\n%s", code, body)
	}
	code, body := get("/api/v1/vms", "Bearer "+token)
	var vms []struct {
		ID   string `json:"id"`
		Pool string `json:"pool"`
	}
	if code != http.StatusOK || json.Unmarshal([]byte(body), &vms) != nil || len(vms) == 0 {
		t.Fatalf("GET /api/v1/vms: %d %s", code, body)
	}
	var apiVMs []string
	for _, v := range vms {
		apiVMs = append(apiVMs, v.ID)
	}
	slices.Sort(apiVMs)

	// The browser reaches the API through a proxy on the host that adds
	// the token, as an operator's authenticating proxy would.
	target, _ := url.Parse(base)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.Transport = &http.Transport{DialContext: r.ns.dial, DisableKeepAlives: true}
	inner := proxy.Director
	proxy.Director = func(req *http.Request) { inner(req); req.Header.Set("Authorization", "Bearer "+token) }
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: proxy, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	page := "http://" + ln.Addr().String() + "/status"

	browser := func(args ...string) []byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		profile := t.TempDir()
		cmd := exec.CommandContext(ctx, chromium, append([]string{"--headless", "--no-sandbox", "--disable-gpu",
			"--no-first-run", "--disable-extensions", "--user-data-dir=" + profile, "--window-size=1280,1400"}, args...)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("chromium %s: %v\n%s", strings.Join(args, " "), err, tail(stderr.Bytes(), 4<<10))
		}
		return out
	}
	dom := string(browser("--dump-dom", page))
	var pageVMs []string
	for _, m := range regexp.MustCompile(`<tr data-vm="([^"]+)">`).FindAllStringSubmatch(dom, -1) {
		pageVMs = append(pageVMs, m[1])
	}
	slices.Sort(pageVMs)
	if !slices.Equal(pageVMs, apiVMs) {
		t.Errorf("the page lists VMs %q, the API %q", pageVMs, apiVMs)
	}
	for _, want := range []string{`<tr data-pool="status-alpha">`, `<tr data-pool="status-beta">`, "Boot time (VMM start to runner ready): 1 observed"} {
		if !strings.Contains(dom, want) {
			t.Errorf("the page lacks %s:\n%s", want, dom)
		}
	}
	secrets := map[string]string{"the API token": token}
	if b, err := os.ReadFile(filepath.Join(r.work, "gitlab-token")); err == nil {
		secrets["the GitLab token"] = strings.TrimSpace(string(b))
	}
	for what, s := range secrets {
		if s == "" || strings.Contains(dom, s) {
			t.Errorf("the page shows %s (or it is empty)", what)
		}
	}

	shot := filepath.Join(t.TempDir(), "status.png")
	browser("--screenshot="+shot, page)
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	img, err := png.Decode(f)
	f.Close()
	if err != nil {
		t.Fatalf("the screenshot is not a PNG: %v", err)
	}
	b := img.Bounds()
	colours := map[uint32]bool{}
	for y := b.Min.Y; y < b.Max.Y; y += 7 {
		for x := b.Min.X; x < b.Max.X; x += 7 {
			r, g, bl, _ := img.At(x, y).RGBA()
			colours[r>>8<<16|g>>8<<8|bl>>8] = true
		}
	}
	if fi, _ := os.Stat(shot); fi.Size() == 0 || b.Dx() < 800 || len(colours) < 3 {
		t.Errorf("the screenshot is %v with %d colours: nothing drawn", b, len(colours))
	}
	t.Logf("screenshot %s: %v, %d colours sampled", shot, b, len(colours))
	ocrCtx, ocrCancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer ocrCancel()
	seen, err := exec.CommandContext(ocrCtx, tesseract, shot, "stdout").Output()
	if err != nil {
		t.Fatalf("tesseract %s: %v", shot, err)
	}
	text := strings.ToLower(string(seen))
	for _, name := range []string{"status-alpha", "status-beta"} {
		if !strings.Contains(text, name) {
			t.Errorf("the screenshot does not show pool %s; OCR read:\n%s", name, seen)
		}
	}
	// Negative control: OCR does not find any name it is asked for.
	if strings.Contains(text, "status-gamma") {
		t.Errorf("OCR reads a pool that does not exist:\n%s", seen)
	}

	// The alert rules and the dashboard read only metrics this
	// orchestrator exports.
	resp, err := c.Get("http://127.0.0.1:" + metricsPort + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	scrape, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	names, err := monitoring.ShippedMetricNames()
	if err != nil {
		t.Fatal(err)
	}
	if u := monitoring.Unexported(names, string(scrape)); len(u) != 0 {
		t.Errorf("the rules or the dashboard read metrics this orchestrator does not export: %q", u)
	}
	if u := monitoring.Unexported([]string{"fireactions_no_such_metric"}, string(scrape)); len(u) != 1 {
		t.Errorf("positive control: an unexported name passed")
	}

	o.terminate(t)
	o.waitExit(t, time.Minute)
}
