package gitea

import (
	"context"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// suspectTTL is how long a runner name whose registration may have
// happened without its answer is looked for at each listing. Gitea
// finishes a registration whose caller gave up within its own request
// timeouts, well inside this.
const suspectTTL = 15 * time.Minute

// sweepTimeout bounds the look for a suspect runner right after its
// registration failed.
const sweepTimeout = 30 * time.Second

// suspect remembers a runner name that Gitea may have registered
// although the driver never got (or could not act on) the answer: no VM
// holds it, so Runners removes it when it shows up.
func (f *Forge) suspect(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.suspects[name] = time.Now()
}

// isSuspect reports whether name is a suspect (and drops expired ones).
func (f *Forge) isSuspect(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	for n, at := range f.suspects {
		if now.Sub(at) > suspectTTL {
			delete(f.suspects, n)
		}
	}
	_, ok := f.suspects[name]
	return ok
}

// lost handles a registration whose outcome is unknown: the name becomes
// a suspect, and a listing looks for it at once (the next listings will
// too, for suspectTTL).
func (f *Forge) lost(ctx context.Context, name string) {
	f.suspect(name)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), sweepTimeout)
	defer cancel()
	// Runners removes the suspects it finds; what it reports is of no use here.
	if _, err := f.Runners(sctx, forge.Owner{}); err != nil {
		f.log.Warn("gitea: look for a runner whose registration failed", "runner", name, "err", err)
	}
}

// removeSuspect removes a runner a listing found under a suspect name.
func (f *Forge) removeSuspect(ctx context.Context, ref forge.RunnerRef) {
	if err := f.Remove(ctx, ref); err != nil {
		f.log.Warn("gitea: remove runner left by a failed registration", "runner", ref.Name, "runner_id", ref.ID, "err", err)
		return
	}
	f.mu.Lock()
	delete(f.suspects, ref.Name)
	f.mu.Unlock()
	f.log.Info("gitea: removed runner left by a failed registration", "runner", ref.Name, "runner_id", ref.ID)
}

// reports decides what a listing (Gitea's or Forgejo's) does with a
// runner it found: a suspect is removed, as no VM holds it, and not
// reported; any other is reported if owner owns it.
func (f *Forge) reports(ctx context.Context, owner forge.Owner, ref forge.RunnerRef) bool {
	if f.isSuspect(ref.Name) {
		f.removeSuspect(ctx, ref)
		return false
	}
	return owner.Owns(ref.Name)
}
