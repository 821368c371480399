package pool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/agentproto"
	"github.com/nixos-fireactions/nixos-fireactions/vmm"
)

// The fake VMM's warm starts, held to vmm.Warm as the QEMU driver does
// it: a spec with an identity channel and no Restore is a template whose
// guest writes TemplateWaiting on its console and waits; SaveState only
// on a template; a restore loads only a whole state its template saved
// (else Resume fails, as QEMU ends on a truncated stream), Resume before
// SendIdentity; the guest then runs with the identity's config. A
// template with a Spec.MemoryFile has its RAM there (created new at
// Start; QEMU's memory-backend-file) and saves device state only; its
// restores resume only with that whole memory file (QEMU's restore
// without it has no guest RAM), and only with the memory file of the
// template that saved the state: each template's memory and state carry
// its number, and a restore that read one template's state and another's
// memory fails (QEMU would not notice: its guest would run on RAM that
// is not its devices', which is why a restore must never pair them).

// warmFake is the fake VMM's warm-start state and failures.
type warmFake struct {
	// warmFail makes each restore fail: "start" (the monitor), "resume"
	// "identity" (no acknowledgement) or "identity-refused" (the
	// guest's refusal, vmm.ErrIdentityRefused); "template": each template's
	// monitor fails to start; "restore-start-unkillable" and
	// "template-start-unkillable": a restore's or a template's start
	// fails and returns its monitor, which no Kill ends (unkillable).
	warmFail atomic.Value // string
	saves    atomic.Int32 // templates saved
	// saveGate, when set, holds each template's SaveState until closed:
	// builds then overlap.
	saveGate   chan struct{}
	restores   atomic.Int32 // restores handed their identity
	identities []agentproto.Identity
	templates  atomic.Int32 // templates started, which numbers each one's memory
	// betweenStateAndMemory, when set before the pool starts, runs in
	// each restore's Resume after the state is read and before the
	// memory file is: where a QEMU restore has opened the one and not
	// yet mapped the other.
	betweenStateAndMemory func()
	loaded                []string // the template number each resumed restore loaded, under mu
	// beforeSave, when set before the pool starts, runs in each
	// template's SaveState (given the saves so far, this one counted)
	// before the state is written: a build under way.
	beforeSave func(n int32)
	// templateKillFails makes each template's Kill report a failure
	// (its monitor may still run, as far as the caller knows).
	templateKillFails atomic.Bool
	// restoreKillFails makes each restore's Kill report a failure.
	restoreKillFails atomic.Bool
	// restoreKillFailures makes the next n restore Kills report a
	// failure (each one counted down), the later ones end the monitor.
	restoreKillFailures atomic.Int32
}

func (h *fakeHV) failing(how string) bool { s, _ := h.warmFail.Load().(string); return s == how }

// fakeState is what a fake template's state file holds: its device
// state (with guest memory unless its RAM is its memory file, which then
// holds fakeMemory) names its drives, in order.
func fakeState(spec vmm.Spec) string {
	var ids []string
	for _, d := range spec.Drives {
		ids = append(ids, d.ID)
	}
	head := "fake guest memory and device state\n"
	if spec.MemoryFile != "" {
		head = "fake device state\n"
	}
	return head + "drives=" + strings.Join(ids, ",") + "\n"
}

const fakeMemory = "fake guest memory\n"

// templateTag is the line naming template n in its memory and state.
func templateTag(n int32) string { return fmt.Sprintf("template=%d\n", n) }

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
		if spec.MemoryFile != "" {
			f, err := os.OpenFile(spec.MemoryFile, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return err
			}
			_, err = f.WriteString(fakeMemory + templateTag(h.templates.Add(1)))
			if err := errors.Join(err, f.Close()); err != nil {
				return err
			}
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

func (m *fakeMachine) SaveState(ctx context.Context, dst string) error {
	if m.spec.Identity == "" || m.spec.Restore != "" {
		return errors.New("fake: save state: not a template")
	}
	if g := m.hv.saveGate; g != nil {
		select {
		case <-g:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	n := m.hv.saves.Add(1)
	if f := m.hv.beforeSave; f != nil {
		f(n)
	}
	var tag string
	if m.spec.MemoryFile == "" {
		tag = templateTag(m.hv.templates.Add(1))
	} else {
		mem, err := os.ReadFile(m.spec.MemoryFile)
		if err != nil {
			return fmt.Errorf("fake: save state: %w", err)
		}
		tag = strings.TrimPrefix(string(mem), fakeMemory)
	}
	return os.WriteFile(dst, []byte(fakeState(m.spec)+tag), 0o600)
}

func (m *fakeMachine) Resume(context.Context) error {
	if m.spec.Restore == "" {
		return errors.New("fake: resume: not a restore")
	}
	b, err := os.ReadFile(m.spec.Restore)
	tag, ok := strings.CutPrefix(string(b), fakeState(m.spec))
	if err != nil || !ok || !strings.HasPrefix(tag, "template=") || !strings.HasSuffix(tag, "\n") {
		return errors.New("fake: QEMU ended loading the saved state (truncated, saved with other drives, or with or without its memory file)")
	}
	if f := m.hv.betweenStateAndMemory; f != nil {
		f()
	}
	if m.spec.MemoryFile != "" {
		mem, err := os.ReadFile(m.spec.MemoryFile)
		if err != nil || !strings.HasPrefix(string(mem), fakeMemory) {
			return errors.New("fake: the template's memory file is not whole")
		}
		if got := strings.TrimPrefix(string(mem), fakeMemory); got != tag {
			return fmt.Errorf("fake: the memory file is another template's (%q) than the state's (%q)", strings.TrimSpace(got), strings.TrimSpace(tag))
		}
	}
	if m.hv.failing("resume") {
		return errors.New("fake: resume refused")
	}
	m.hv.mu.Lock()
	m.hv.loaded = append(m.hv.loaded, strings.TrimSpace(tag))
	m.hv.mu.Unlock()
	m.resumed.Store(true)
	return nil
}

func (m *fakeMachine) SendIdentity(_ context.Context, b []byte) error {
	if m.identity == nil || !m.resumed.Load() {
		return errors.New("fake: send identity: not a resumed restore")
	}
	// The agent reads one line on its identity channel and listens no
	// more: a second identity gets no answer.
	if !m.identityTaken.CompareAndSwap(false, true) {
		return errors.New("fake: send identity: no acknowledgement from the guest (it took its identity already)")
	}
	if m.hv.failing("identity") {
		return errors.New("fake: send identity: no acknowledgement from the guest")
	}
	if m.hv.failing("identity-refused") {
		return fmt.Errorf("fake: send identity: %w", vmm.ErrIdentityRefused)
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

// TestTheFakeGuestTakesOneIdentity: the fake's guest, as the agent,
// answers the first identity sent to it and no later one (which fails
// at once, not holding its caller).
func TestTheFakeGuestTakesOneIdentity(t *testing.T) {
	hv := &fakeHV{}
	m := &fakeMachine{hv: hv, spec: vmm.Spec{ID: "vm-1", MAC: "02:00:00:00:00:01"}, identity: make(chan agentproto.Identity, 1)}
	m.resumed.Store(true)
	id, _ := json.Marshal(agentproto.Identity{Config: agentproto.Config{VMID: "vm-1"}, MAC: "02:00:00:00:00:01", Seed: make([]byte, 32), Now: time.Now()})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := m.SendIdentity(ctx, id); err != nil {
		t.Fatalf("first identity: %v", err)
	}
	second := make(chan error, 1)
	go func() { second <- m.SendIdentity(ctx, id) }()
	select {
	case err := <-second:
		if err == nil || !strings.Contains(err.Error(), "no acknowledgement") {
			t.Fatalf("second identity: %v; want no acknowledgement", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the second identity held its caller")
	}
	if n := hv.restores.Load(); n != 1 {
		t.Fatalf("%d restores counted as handed their identity; want 1", n)
	}
}
