package pool

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/internal/hosttest"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// TestGuestReportFloodCannotFillTheHostLog: a guest that sends thousands
// of reports with 16 KiB messages (its token is valid: it is a job with
// root in its own VM) writes a bounded amount of host log, at any level,
// and its VM still takes the reports that matter.
func TestGuestReportFloodCannotFillTheHostLog(t *testing.T) {
	var logs hosttest.SyncBuffer
	h := newHarnessLogging(t, 1, 1, guestHangs, func(pc *config.Pool) { pc.Timeouts.Boot = time.Minute },
		slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))

	var vmCfg agentproto.Config
	eventually(t, 10*time.Second, "a VM booting", func() bool {
		h.boot.Lock()
		defer h.boot.Unlock()
		for _, c := range h.boot.Configs {
			vmCfg = c
			return true
		}
		return false
	})
	const reports, msgSize = 2000, 16 << 10
	msg := strings.Repeat("x", msgSize)
	start := logs.Len()
	for i := 0; i < reports; i++ {
		_ = h.m.Report(vmCfg.Report.Token, agentproto.Report{VMID: vmCfg.VMID, Event: agentproto.EventNetworkUp, Message: msg})
		_ = h.m.Report(vmCfg.Report.Token, agentproto.Report{VMID: vmCfg.VMID, Event: agentproto.Event(msg), Message: msg})
	}
	// The reports that matter still arrive after the flood.
	eventually(t, 10*time.Second, "runner-ready taken after the flood", func() bool {
		_ = h.m.Report(vmCfg.Report.Token, agentproto.Report{VMID: vmCfg.VMID, Event: agentproto.EventRunnerReady})
		return h.m.Phases()[vmstate.Idle] == 1
	})
	written := logs.Len() - start
	const bound = 256 << 10
	t.Logf("%d reports of %d KiB: %d bytes of host log", 2*reports, msgSize>>10, written)
	if written > bound {
		t.Fatalf("a guest's report flood wrote %d bytes of host log (bound %d)", written, bound)
	}
}

var _ = io.Discard
