package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nixos-fireactions/nixos-fireactions/fleet"
)

var _ fleet.Observer = (*Metrics)(nil)

// fleetCollectors are the fleet's claims by result and whether this
// host is in the fleet.
type fleetCollectors struct {
	claims    *prometheus.CounterVec
	reachable prometheus.Gauge
}

func newFleetCollectors(reg *prometheus.Registry) fleetCollectors {
	fc := fleetCollectors{
		claims: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fireactions_fleet_claims_total",
			Help: "Claims on queued jobs: won (this host serves the job), lost (another host holds it, or took it after this host's claim lapsed), expired (dropped unrefreshed: NATS unreachable).",
		}, []string{"result"}),
		reachable: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fireactions_fleet_reachable", Help: "1 while this host is in its fleet (NATS reachable, presence refreshed); 0 while cut off: it claims nothing new.",
		}),
	}
	for _, r := range []string{"won", "lost", "expired"} {
		fc.claims.WithLabelValues(r)
	}
	reg.MustRegister(fc.claims, fc.reachable)
	return fc
}

func (m *Metrics) ClaimWon()     { m.fleet.claims.WithLabelValues("won").Inc() }
func (m *Metrics) ClaimLost()    { m.fleet.claims.WithLabelValues("lost").Inc() }
func (m *Metrics) ClaimExpired() { m.fleet.claims.WithLabelValues("expired").Inc() }
func (m *Metrics) FleetReachable(ok bool) {
	v := 0.0
	if ok {
		v = 1
	}
	m.fleet.reachable.Set(v)
}
