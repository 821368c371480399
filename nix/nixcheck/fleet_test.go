//go:build nixcheck

package nixcheck

import (
	"encoding/json"
	"slices"
	"testing"
)

// A host with fleet options gets a fleet section the binary accepts, its
// NATS credentials through LoadCredential (never the store); a host
// without them gets none.
func TestFleetOptions(t *testing.T) {
	var hosts map[string]report
	eval(t, evalChecks+".fleet", &hosts)
	for name, r := range hosts {
		if len(r.Assertions) > 0 {
			t.Errorf("%s: failed assertions %q", name, r.Assertions)
		}
		u := r.Units["fireteact"]
		checkUnit(t, name, "fireteact", u)
		var cfg struct {
			Fleet *struct {
				URLs          []string `json:"urls"`
				CredsFile     string   `json:"credentials_file"`
				TokenFile     string   `json:"token_file"`
				ClaimTTL      string   `json:"claim_ttl"`
				Replicas      int      `json:"replicas"`
				OnUnreachable string   `json:"on_unreachable"`
			}
		}
		if err := json.Unmarshal(u.Settings, &cfg); err != nil {
			t.Fatal(err)
		}
		creds := strs(u.ServiceConfig["LoadCredential"])
		switch name {
		case "member":
			f := cfg.Fleet
			if f == nil || !slices.Equal(f.URLs, []string{"nats://10.0.0.1:4222", "nats://10.0.0.2:4222"}) ||
				f.CredsFile != "/run/credentials/fireteact.service/fleet-credentials" || f.ClaimTTL != "10s" || f.Replicas != 3 || f.OnUnreachable != "fail" {
				t.Errorf("%s: fleet %+v", name, f)
			}
			if !slices.Contains(creds, "fleet-credentials:/run/secrets/nats.creds") {
				t.Errorf("%s: LoadCredential %v lacks the NATS credentials", name, creds)
			}
		case "tokened":
			if f := cfg.Fleet; f == nil || f.TokenFile != "/run/credentials/fireteact.service/fleet-token" || f.CredsFile != "" || f.Replicas != 1 {
				t.Errorf("%s: fleet %+v", name, f)
			}
			if !slices.Contains(creds, "fleet-token:/run/secrets/nats.token") {
				t.Errorf("%s: LoadCredential %v lacks the NATS token", name, creds)
			}
		case "alone":
			if cfg.Fleet != nil {
				t.Errorf("%s: fleet %+v without fleet options", name, cfg.Fleet)
			}
			if slices.ContainsFunc(creds, func(c string) bool { return len(c) > 6 && c[:6] == "fleet-" }) {
				t.Errorf("%s: LoadCredential %v", name, creds)
			}
		default:
			t.Errorf("unexpected %s", name)
		}
	}
	if len(hosts) != 3 {
		t.Errorf("%d hosts", len(hosts))
	}
}
