package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		want    string
		wantErr string
	}{
		{[]string{"one-job", "--config", "/home/runner/config.yaml"}, "/home/runner/config.yaml", ""},
		{[]string{"-c", "/c.yaml", "one-job"}, "/c.yaml", ""},
		{[]string{"one-job", "--config=/c.yaml"}, "/c.yaml", ""},
		{[]string{"daemon", "--config", "/c.yaml"}, "", "only one-job"},
		{[]string{"one-job", "--config"}, "", "needs a file"},
	} {
		got, err := parse(tc.args)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: err %v, want %q", tc.args, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %q, %v; want %q", tc.args, got, err, tc.want)
		}
	}
}

func TestRelayRewritesTheReadyLine(t *testing.T) {
	var out bytes.Buffer
	relay(strings.NewReader("level=info msg=\"runner: r1, with version: v1.0.8, with labels: [x], declare successfully\"\nother\n"), &out)
	want := "level=info msg=\"runner: r1, with version: v1.0.8, with labels: [x], declared successfully\"\nother\n"
	if out.String() != want {
		t.Fatalf("relay:\n%s\nwant:\n%s", out.String(), want)
	}
}
