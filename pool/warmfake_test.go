package pool

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"sync/atomic"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// The fake VMM's warm starts, held to vmm.Warm as the QEMU driver does
// it: a spec with an identity channel and no Restore is a template whose
// guest writes TemplateWaiting on its console and waits; SaveState only
// on a template; a restore loads only a whole state its template saved
// (else Resume fails, as QEMU ends on a truncated stream), Resume before
// SendIdentity; the guest then runs with the identity's config.

// warmFake is the fake VMM's warm-start state and failures.
type warmFake struct {
	// warmFail makes each restore fail: "start" (the monitor), "resume"
	// or "identity" (no acknowledgement); "template": each template's
	// monitor fails to start.
	warmFail   atomic.Value // string
	saves      atomic.Int32 // templates saved
	restores   atomic.Int32 // restores handed their identity
	identities []agentproto.Identity
}

func (h *fakeHV) failing(how string) bool { s, _ := h.warmFail.Load().(string); return s == how }

// fakeState is what a fake template's state file holds: its device
// state names its drives, in order.
func fakeState(spec vmm.Spec) string {
	var ids []string
	for _, d := range spec.Drives {
		ids = append(ids, d.ID)
	}
	return "fake guest memory and device state\ndrives=" + strings.Join(ids, ",") + "\n"
}

// startWarm is Start's part for specs with an identity channel; the
// caller holds h.mu.
func (h *fakeHV) startWarm(spec vmm.Spec) error {
	if spec.Identity == "" {
		if spec.Restore != "" {
			return errors.New("a restore without an identity channel")
		}
		return nil
	}
	if spec.Restore == "" {
		if h.failing("template") {
			return errors.New("monitor would not start the template")
		}
		return os.WriteFile(spec.ConsoleLog, []byte("[    0.1] booting\n"+TemplateWaiting+"\n"), 0o600)
	}
	if h.failing("start") {
		return errors.New("monitor would not start from the saved state")
	}
	return nil
}

func (m *fakeMachine) waitIdentity() (agentproto.Identity, bool) {
	select {
	case id := <-m.identity:
		return id, true
	case <-m.kill:
		m.err = vmm.ErrKilled
		return agentproto.Identity{}, false
	}
}

func (m *fakeMachine) SaveState(_ context.Context, dst string) error {
	if m.spec.Identity == "" || m.spec.Restore != "" {
		return errors.New("fake: save state: not a template")
	}
	m.hv.saves.Add(1)
	return os.WriteFile(dst, []byte(fakeState(m.spec)), 0o600)
}

func (m *fakeMachine) Resume(context.Context) error {
	if m.spec.Restore == "" {
		return errors.New("fake: resume: not a restore")
	}
	if b, err := os.ReadFile(m.spec.Restore); err != nil || string(b) != fakeState(m.spec) {
		return errors.New("fake: QEMU ended loading the saved state (truncated, or saved with other drives)")
	}
	if m.hv.failing("resume") {
		return errors.New("fake: resume refused")
	}
	m.resumed.Store(true)
	return nil
}

func (m *fakeMachine) SendIdentity(_ context.Context, b []byte) error {
	if m.identity == nil || !m.resumed.Load() {
		return errors.New("fake: send identity: not a resumed restore")
	}
	if m.hv.failing("identity") {
		return errors.New("fake: send identity: no acknowledgement from the guest")
	}
	var id agentproto.Identity
	if err := json.Unmarshal(b, &id); err != nil {
		return err
	}
	if id.Config.VMID != m.spec.ID || id.MAC != m.spec.MAC || len(id.Seed) < 32 || id.Now.IsZero() {
		return errors.New("fake: the guest refuses an identity not its own or without seed and clock")
	}
	m.hv.mu.Lock()
	m.hv.identities = append(m.hv.identities, id)
	m.hv.mu.Unlock()
	m.hv.restores.Add(1)
	m.identity <- id
	return nil
}
