// Package monitoring ships what a host's Prometheus and Grafana need to
// watch the orchestrator: the alert rules (alerts.yml, unit-tested by
// alerts_test.yml with promtool; runbooks in docs/alerts.md) and the
// Grafana dashboard (dashboards/fireactions.json), which the NixOS
// module provisions from this directory. The Go side exists so tests can
// hold both to the program: it reads the metric names their queries use.
package monitoring

import (
	"embed"
	"encoding/json"
	"fmt"
	"regexp"

	"gopkg.in/yaml.v3"
)

//go:embed alerts.yml dashboards/fireactions.json
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

// labelValues is a Grafana variable's query of a label's values: its
// first argument is a selector, its second a label name.
var labelValues = regexp.MustCompile(`^\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$`)

// DashboardQueries reads the PromQL of the dashboard: every panel's
// targets (rows' nested panels too) and the selectors of its variables'
// label_values queries.
func DashboardQueries() ([]string, error) {
	b, err := files.ReadFile("dashboards/fireactions.json")
	if err != nil {
		return nil, fmt.Errorf("read the dashboard: %w", err)
	}
	type panel struct {
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
		Panels []json.RawMessage `json:"panels"`
	}
	var dash struct {
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		return nil, fmt.Errorf("parse the dashboard: %w", err)
	}
	var out []string
	var walk func([]json.RawMessage) error
	walk = func(ps []json.RawMessage) error {
		for _, raw := range ps {
			var p panel
			if err := json.Unmarshal(raw, &p); err != nil {
				return fmt.Errorf("parse a dashboard panel: %w", err)
			}
			for _, t := range p.Targets {
				out = append(out, t.Expr)
			}
			if err := walk(p.Panels); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(dash.Panels); err != nil {
		return nil, err
	}
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if json.Unmarshal(v.Query, &q.Query) != nil {
			if err := json.Unmarshal(v.Query, &q); err != nil {
				return nil, fmt.Errorf("parse a dashboard variable's query: %w", err)
			}
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			return nil, fmt.Errorf("dashboard variable query %q: want label_values(selector, label)", q.Query)
		}
		out = append(out, m[1])
	}
	return out, nil
}
