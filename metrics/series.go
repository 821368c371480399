package metrics

import "github.com/nixos-fireactions/nixos-fireactions/pool"

// reasons and causes are the label values a pool's failure and shortage
// counters start with at zero.
var (
	reasons = []string{pool.ReasonSetup, pool.ReasonRegister, pool.ReasonStart, pool.ReasonBootTimeout,
		pool.ReasonJobTimeout, pool.ReasonCrashed, pool.ReasonRunner, pool.ReasonStopped,
		pool.ReasonHostResource, pool.ReasonRecycled}
	causes = []string{pool.ShortDisk, pool.ShortMemory, pool.ShortAddresses}
)

// PoolSeries makes a pool's series exist before anything happens to it:
// its counters and histograms at zero, and its rate limit at the forge at -1
// (unknown) until a call tells it. Alert rules and dashboards then see a
// pool that never started a VM or never failed one as 0, not as nothing
// (a missing series matches no rule). Call it for each configured pool,
// again after a reload.
func (m *Metrics) PoolSeries(poolName, forgeName string) {
	m.started.WithLabelValues(poolName)
	m.unsaved.WithLabelValues(poolName)
	for _, r := range reasons {
		m.failed.WithLabelValues(poolName, r)
	}
	for _, c := range causes {
		m.shortages.WithLabelValues(poolName, c)
	}
	m.provision.WithLabelValues(poolName)
	m.boot.WithLabelValues(poolName)
	m.jobDuration.WithLabelValues(poolName)
	m.queueWait.WithLabelValues(poolName)
	m.rateMu.Lock()
	defer m.rateMu.Unlock()
	if k := (rateKey{forgeName, poolName}); !m.rateKnown[k] {
		m.rateKnown[k] = true
		m.forgeRateLimit.WithLabelValues(forgeName, poolName).Set(-1)
	}
}

// RetainRateLimits drops the rate-limit gauges of pools no longer
// configured (pools maps each configured pool to its forge), after a
// reload took them: a removed pool's last budget, left behind, would
// hold the low-budget alert for ever.
func (m *Metrics) RetainRateLimits(pools map[string]string) {
	m.rateMu.Lock()
	defer m.rateMu.Unlock()
	for k := range m.rateKnown {
		if f, ok := pools[k.pool]; !ok || f != k.forge {
			m.forgeRateLimit.DeleteLabelValues(k.forge, k.pool)
			delete(m.rateKnown, k)
		}
	}
}
