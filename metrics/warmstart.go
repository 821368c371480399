package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nixos-fireactions/nixos-fireactions/warmstart"
)

// WarmStarts counts the VMs of warm-start pools not restored (booted
// cold, or failed with their restore's monitor not ended), by reason: it
// is the warmstart.Counter a pool's warmstart.Chooser reports to.
type WarmStarts struct{ fallbacks, builds *prometheus.CounterVec }

var _ warmstart.Counter = (*WarmStarts)(nil)

// WarmStarts registers fireactions_warm_start_fallbacks_total; call it
// once per Metrics.
func (m *Metrics) WarmStarts() *WarmStarts {
	w := &WarmStarts{fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fireactions_warm_start_fallbacks_total",
		Help: "VMs of warm-start pools not restored, by reason: booted cold (no_template, vmm_mismatch, kernel_mismatch, image_mismatch, agent_mismatch, state_missing, state_truncated, bad_manifest, restore_failed, identity_refused: the restored guest could not apply its identity) or failed (restore_kill_failed: the restore failed and its monitor could not be ended, so the VM did not boot cold in its slot).",
	}, []string{"pool", "reason"}), builds: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fireactions_warm_start_template_builds_total",
		Help: "Warm-start pools' template builds (or adoptions of a previous run's), by result (ok, failed); while a pool has none its VMs boot cold.",
	}, []string{"pool", "result"})}
	m.reg.MustRegister(w.fallbacks, w.builds)
	return w
}

// WarmStartFallback implements warmstart.Counter.
func (w *WarmStarts) WarmStartFallback(pool string, r warmstart.Reason) {
	w.fallbacks.WithLabelValues(pool, string(r)).Inc()
}

// WarmTemplateBuilt implements pool.TemplateCounter.
func (w *WarmStarts) WarmTemplateBuilt(pool string, ok bool) {
	result := "failed"
	if ok {
		result = "ok"
	}
	w.builds.WithLabelValues(pool, result).Inc()
}
