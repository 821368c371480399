package pool

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// earlyHV starts guests whose agent fails before the runner starts and
// powers off cleanly: it writes its fatal line to the serial console, as
// the agent does, and reports the failure first when report is set (a
// guest whose network came up; without one the report cannot reach the
// host).
type earlyHV struct {
	m      *Manager
	boot   *hosttest.Boot
	report bool
}

func (earlyHV) Name() string { return "early" }

func (h earlyHV) Start(_ context.Context, spec vmm.Spec) (vmm.Machine, error) {
	cfg := h.boot.Config(spec.ID)
	msg := "configuring network: interface eth0 did not appear within 10s: Link not found"
	if h.report {
		msg = "image root: disk fa-image did not appear"
		_ = h.m.Report(cfg.Report.Token, agentproto.Report{VMID: cfg.VMID, Event: agentproto.EventFailed, Message: msg})
	}
	console := "[agent +0.012s] fireactions agent starting\n[agent +10.020s] fatal: " + msg + "\n[agent +10.021s] powering off\n"
	if err := os.WriteFile(spec.ConsoleLog, []byte(console), 0o600); err != nil {
		return nil, err
	}
	m := &fakeMachine{done: make(chan struct{}), kill: make(chan struct{})}
	close(m.done) // powered off, the monitor exiting cleanly
	return m, nil
}

// A guest that powers off before its runner exits is a failure the host
// logs at WARN with the VM's id and what the guest said: the failure its
// agent reported, or, when no report could reach the host (no network),
// the agent's fatal line from the serial console.
func TestEarlyPowerOffLogsTheGuestsReason(t *testing.T) {
	for _, tt := range []struct {
		name   string
		report bool
		want   string
	}{
		{"reported", true, "its agent reported: image root: disk fa-image did not appear"},
		{"console only", false, "its console says: configuring network: interface eth0 did not appear within 10s"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var logs hosttest.SyncBuffer
			h := newHarnessLogging(t, 0, 1, guestHangs, nil, slog.New(slog.NewTextHandler(&logs, nil)))
			h.m.d.Hypervisor = earlyHV{m: h.m, boot: h.boot, report: tt.report} // before any job: no VM has started
			h.forge.enqueue("j1")
			var line string
			eventually(t, 5*time.Second, "a failed VM logged", func() bool {
				for _, l := range strings.Split(logs.String(), "\n") {
					if strings.Contains(l, `msg="vm gone"`) {
						line = l
						return true
					}
				}
				return false
			})
			if !strings.Contains(line, "level=WARN") || !strings.Contains(line, " vm=") || !strings.Contains(line, tt.want) {
				t.Fatalf("log line %q; want WARN with the vm id and %q", line, tt.want)
			}
		})
	}
}
