package warmstart

import (
	"context"
	"log/slog"
)

// Counter counts the VMs of a warm-start pool not restored, by reason
// (the metrics package's fireactions_warm_start_fallbacks_total): those
// that boot cold, and those whose restore's monitor could not be ended
// (ReasonRestoreKillFailed), which fail.
type Counter interface {
	WarmStartFallback(pool string, reason Reason)
}

// Chooser picks, for each VM of a warm-start pool, its template or a
// cold boot, and says why it boots cold.
type Chooser struct {
	Pool    string
	Log     *slog.Logger
	Metrics Counter
	// Rebuild, if set, is called with the build Template was given when
	// it finds that build's files gone or not whole (Damaged): it will
	// never restore a VM again, so the pool builds it anew rather than
	// boot cold until its files change. The pool may have published
	// another build meanwhile: the build says which the report is about.
	Rebuild func(build string)
}

// Damaged reports whether err, Open's, says the template's files are
// gone or not what was sealed (rather than made from another key, which
// a change of the pool's files rebuilds).
func Damaged(err error) bool {
	switch AsFallback(err).Reason {
	case ReasonNoTemplate, ReasonStateMissing, ReasonStateTruncated, ReasonBadManifest:
		return true
	}
	return false
}

// Template is the template in build (one build's directory, see
// Current) to restore vm from, or nil: vm boots cold, and the reason is
// logged (WARN, with pool and vm) and counted.
func (c *Chooser) Template(ctx context.Context, vm, build string, want Key) *Template {
	t, err := Open(build, want)
	if err == nil {
		return t
	}
	if c.Rebuild != nil && Damaged(err) {
		c.Rebuild(build)
	}
	c.ColdBoot(ctx, vm, err)
	return nil
}

// ColdBoot logs and counts a cold boot of vm for err: a template Open
// refused, or a restore that failed (the VM is ended and booted cold).
func (c *Chooser) ColdBoot(ctx context.Context, vm string, err error) {
	f := AsFallback(err)
	if c.Log != nil {
		c.Log.WarnContext(ctx, "warm start: booting cold", "pool", c.Pool, "vm", vm, "reason", string(f.Reason), "detail", f.Detail)
	}
	if c.Metrics != nil {
		c.Metrics.WarmStartFallback(c.Pool, f.Reason)
	}
}

// RestoreNotEnded logs (ERROR, with pool and vm) and counts, under
// ReasonRestoreKillFailed, vm's restore that failed and whose monitor
// could not be ended (err says both): the VM fails rather than boot cold
// in a slot that monitor may still run as.
func (c *Chooser) RestoreNotEnded(ctx context.Context, vm string, err error) {
	if c.Log != nil {
		c.Log.ErrorContext(ctx, "warm start: a failed restore's monitor is not known gone; the vm fails, not booted cold in its slot",
			"pool", c.Pool, "vm", vm, "reason", string(ReasonRestoreKillFailed), "err", err)
	}
	if c.Metrics != nil {
		c.Metrics.WarmStartFallback(c.Pool, ReasonRestoreKillFailed)
	}
}
