package config

import (
	"testing"
	"time"
)

// TestLimitsDefaultsAndRanges: the limits section defaults to safe values,
// takes settings, and refuses values that would switch a bound off,
// naming the field.
func TestLimitsDefaultsAndRanges(t *testing.T) {
	f := newFixture(t)
	c := f.mustParse(minimalYAML)
	if c.Limits != limitsDefaults() || c.Limits.ReadTimeout != 30*time.Second || c.Limits.WebhookMaxBody != 1<<20 {
		t.Fatalf("defaults: %+v", c.Limits)
	}
	c = f.mustParse(replace(t, minimalYAML, "forges:", "limits: {read_timeout: 5s, agent_conns_per_source: 2, webhook_max_body: 65536, webhook_buffer: 1048576}\nforges:"))
	if c.Limits.ReadTimeout != 5*time.Second || c.Limits.AgentConnsPerSource != 2 || c.Limits.WebhookMaxBody != 65536 || c.Limits.IdleTimeout != time.Minute {
		t.Fatalf("set: %+v", c.Limits)
	}
	for _, tt := range []struct{ yaml, field, want string }{
		{"{read_timeout: 1ns}", "limits.read_timeout", "1ns is less than 1s"},
		{"{read_header_timeout: 0s}", "limits.read_header_timeout", "less than 1s"},
		{"{idle_timeout: 2h}", "limits.idle_timeout", "more than 1h"},
		{"{max_conns: 0}", "limits.max_conns", "0 is not between 1 and 65536"},
		{"{agent_conns_per_source: 100000}", "limits.agent_conns_per_source", "not between 1 and 1024"},
		{"{webhook_max_body: 104857600}", "limits.webhook_max_body", "not between 1024 and 26214400"},
		{"{webhook_buffer: 1024}", "limits.webhook_buffer", "not between 1048576"},
	} {
		oneProblem(t, f, replace(t, minimalYAML, "forges:", "limits: "+tt.yaml+"\nforges:"), tt.field, tt.want)
	}
}
