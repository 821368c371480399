// Package monitoring ships what a host's Prometheus and Grafana need to
// watch the orchestrator: the alert rules (alerts.yml, unit-tested by
// alerts_test.yml with promtool; runbooks in docs/alerts.md) and the
// Grafana dashboard (dashboards/fireactions.json), which the NixOS
// module provisions from this directory. The Go side exists so tests can
// hold both to the program: it reads the metric names their queries use.
package monitoring

import (
	"embed"
	"fmt"

	"gopkg.in/yaml.v3"
)

//go:embed alerts.yml
var files embed.FS

// Rule is one alerting rule of alerts.yml.
type Rule struct {
	Alert string `yaml:"alert"`
	Expr  string `yaml:"expr"`
}

// Rules reads the alert rules.
func Rules() ([]Rule, error) {
	b, err := files.ReadFile("alerts.yml")
	if err != nil {
		return nil, fmt.Errorf("read alerts.yml: %w", err)
	}
	var doc struct {
		Groups []struct {
			Rules []Rule `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("parse alerts.yml: %w", err)
	}
	var out []Rule
	for _, g := range doc.Groups {
		out = append(out, g.Rules...)
	}
	return out, nil
}
