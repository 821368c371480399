package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/fleet"
	"github.com/nixos-fireactions/nixos-fireactions/fleet/fleettest"
)

// `fleet status` lists the fleet's hosts and claims, says when this host
// is not among them, and fails naming the URL when NATS is unreachable.
func TestFleetStatus(t *testing.T) {
	url := fleettest.RunNATS(t)
	ctx := t.Context()
	f, err := fleet.Join(ctx, fleet.Options{URLs: []string{url}, TokenFile: fleettest.TokenFile(t), HostID: "other", ClaimTTL: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close(context.Background())
	f.Publish("small", 4, 1)
	f.Publish("big", 0, 2)
	if ok, err := f.Claim(ctx, "g|instance\x0042"); !ok || err != nil {
		t.Fatalf("claim: %v %v", ok, err)
	}
	dir := t.TempDir()
	tokenFile := fleettest.TokenFile(t)
	for _, n := range []string{"kernel", "root.cpio"} {
		os.WriteFile(filepath.Join(dir, n), nil, 0o644)
	}
	os.WriteFile(filepath.Join(dir, "token"), []byte("secret-token\n"), 0o600)
	conf := func(natsURL string) string {
		p := filepath.Join(dir, "c.yaml")
		text := giteaConfig("/var/lib/fa", "root_initramfs: DIR/root.cpio") + "fleet: {urls: [" + natsURL + "], claim_ttl: 10s, token_file: " + tokenFile + "}\n"
		os.WriteFile(p, []byte(strings.ReplaceAll(text, "DIR", dir)), 0o600)
		return p
	}
	var out, errb bytes.Buffer
	// Its loads are published shortly after they are told.
	time.Sleep(500 * time.Millisecond)
	if code := Main([]string{"fleet", "status", "--config", conf(url)}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"other", `"g|instance\x0042"`, "this host (h) is not in the fleet", "big free 0 idle 2, small free 4 idle 1"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	errb.Reset()
	if code := Main([]string{"fleet", "status", "--config", conf("nats://127.0.0.1:1")}, &out, &errb); code == 0 ||
		!strings.Contains(errb.String(), "cut off from its fleet") || !strings.Contains(errb.String(), "nats://127.0.0.1:1") {
		t.Errorf("unreachable NATS: exit %d, stderr %q; want non-zero naming the URL", code, errb.String())
	}
}
