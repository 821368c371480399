//go:build nixcheck

package nixcheck

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// monitoringReport is one host of nix/eval/checks.nix's monitoring.
type monitoringReport struct {
	Checked       bool
	Assertions    []string
	RuleFiles     []string
	ScrapeConfigs []struct {
		JobName       string `json:"job_name"`
		StaticConfigs []struct {
			Targets []string `json:"targets"`
		} `json:"static_configs"`
	}
	GrafanaProvision bool
	Providers        []struct{ Name, Type, Path string }
}

// With Prometheus and Grafana on the host, services.microvm-base.monitoring
// loads the alert rules, scrapes each orchestrator as job fireactions
// (an unspecified address on 127.0.0.1) and provisions the dashboard,
// under nixpkgs' option types; off, without Prometheus and Grafana, or
// with no orchestrator serving metrics, it adds nothing (a scrape job
// without targets would page FireactionsOrchestratorDown forever).
func TestMonitoringProvisioned(t *testing.T) {
	var hosts map[string]monitoringReport
	eval(t, evalChecks+".monitoring", &hosts)
	for name, h := range hosts {
		if !h.Checked || len(h.Assertions) > 0 {
			t.Errorf("%s: checked %v, failed assertions %q", name, h.Checked, h.Assertions)
		}
	}
	on := hosts["on"]
	if len(on.RuleFiles) != 1 || !strings.HasSuffix(on.RuleFiles[0], "/deploy/monitoring/alerts.yml") {
		t.Errorf("on: ruleFiles %q, want deploy/monitoring/alerts.yml", on.RuleFiles)
	} else if _, err := os.Stat(on.RuleFiles[0]); err != nil {
		t.Errorf("on: the rule file: %v", err)
	}
	if len(on.ScrapeConfigs) != 1 || on.ScrapeConfigs[0].JobName != "fireactions" || len(on.ScrapeConfigs[0].StaticConfigs) != 1 {
		t.Fatalf("on: scrape configs %+v, want one job fireactions", on.ScrapeConfigs)
	}
	targets := slices.Sorted(slices.Values(on.ScrapeConfigs[0].StaticConfigs[0].Targets))
	if want := []string{"127.0.0.1:9465", "127.0.0.1:9600"}; !slices.Equal(targets, want) {
		t.Errorf("on: targets %q, want %q (fireteact's default, fireglab's 0.0.0.0:9600)", targets, want)
	}
	if !on.GrafanaProvision || len(on.Providers) != 1 || on.Providers[0].Name != "fireactions" || on.Providers[0].Type != "file" ||
		!strings.HasSuffix(on.Providers[0].Path, "/deploy/monitoring/dashboards") {
		t.Errorf("on: grafana provision %v providers %+v", on.GrafanaProvision, on.Providers)
	} else if _, err := os.Stat(on.Providers[0].Path + "/fireactions.json"); err != nil {
		t.Errorf("on: the dashboard: %v", err)
	}
	for _, name := range []string{"off", "without"} {
		h := hosts[name]
		if len(h.RuleFiles)+len(h.ScrapeConfigs)+len(h.Providers) != 0 || h.GrafanaProvision {
			t.Errorf("%s: provisions %+v", name, h)
		}
	}
	if m := hosts["metricsOff"]; len(m.RuleFiles)+len(m.ScrapeConfigs) != 0 || len(m.Providers) != 1 {
		t.Errorf("metricsOff: rules %q scrape %+v providers %+v: want the dashboard only", m.RuleFiles, m.ScrapeConfigs, m.Providers)
	}
}
