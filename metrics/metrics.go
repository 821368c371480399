// Package metrics is the orchestrator's Prometheus instrumentation: the
// pool manager's events as counters and histograms, pool and runner
// states read at scrape time, and forge API calls. Every label has a
// bounded set of values: pools, forges, phases, reasons and operations,
// never job or VM ids.
package metrics

import (
	"math"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/nixos-fireactions/nixos-fireactions/pool"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// Pools is what the scrape-time collector reads.
type Pools interface {
	Pools() []pool.PoolStatus
}

// Metrics holds the collectors; it implements pool.Observer.
type Metrics struct {
	reg *prometheus.Registry

	started     *prometheus.CounterVec
	failed      *prometheus.CounterVec
	unserved    prometheus.Counter
	unsaved     *prometheus.CounterVec
	shortages   *prometheus.CounterVec
	provision   *prometheus.HistogramVec
	boot        *prometheus.HistogramVec
	jobDuration *prometheus.HistogramVec
	queueWait   *prometheus.HistogramVec

	forgeRequests  *prometheus.CounterVec
	forgeErrors    *prometheus.CounterVec
	forgeRateLimit *prometheus.GaugeVec

	outcomes outcomeRing

	// rateKnown are the forges' and pools' rate-limit gauges that exist:
	// set to -1 by PoolSeries, or to what a call told.
	rateMu    sync.Mutex
	rateKnown map[rateKey]bool

	fleet fleetCollectors
}

// rateKey names a rate-limit gauge: a forge and one of its pools.
type rateKey struct{ forge, pool string }

var _ pool.Observer = (*Metrics)(nil)

// seconds are histogram buckets from 100 ms to ~3 h.
var seconds = prometheus.ExponentialBuckets(0.1, 2.5, 13)

var inf = math.Inf(1)

// New registers every collector. stateDir's file system is reported as
// disk use.
func New(stateDir string) *Metrics {
	m := &Metrics{
		reg:       prometheus.NewRegistry(),
		rateKnown: map[rateKey]bool{},
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fireactions_vms_started_total", Help: "VMs whose monitor started.",
		}, []string{"pool"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fireactions_vms_failed_total", Help: "VMs that ended without their job done, by reason.",
		}, []string{"pool", "reason"}),
		unserved: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fireactions_jobs_unserved_total", Help: "Queued jobs whose labels no pool offers (each counted once).",
		}),
		unsaved: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fireactions_vm_record_save_failures_total",
			Help: "VM records that could not be saved (a full or failing state disk), once per VM and outage; the reconcile loop saves them again.",
		}, []string{"pool"}),
		shortages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fireactions_host_shortages_total", Help: "VMs that could not be made for lack of a host resource, by cause (disk, memory, addresses).",
		}, []string{"pool", "cause"}),
		provision: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "fireactions_vm_provision_seconds", Help: "VM requested until its runner is registered at the forge.", Buckets: seconds,
		}, []string{"pool"}),
		boot: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "fireactions_vm_boot_seconds", Help: "VMM started (a restore: its handover, its runner registered) until the guest's runner is ready.", Buckets: seconds,
		}, []string{"pool"}),
		jobDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "fireactions_job_duration_seconds", Help: "Runner busy until it exited.", Buckets: seconds,
		}, []string{"pool"}),
		queueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "fireactions_job_queue_wait_seconds", Help: "Job queued until it left the queue (started or cancelled).", Buckets: seconds,
		}, []string{"pool"}),
		forgeRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fireactions_forge_requests_total", Help: "Forge API operations.",
		}, []string{"forge", "op"}),
		forgeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fireactions_forge_errors_total", Help: "Forge API operations that failed.",
		}, []string{"forge", "op"}),
		forgeRateLimit: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "fireactions_forge_rate_limit_remaining",
			Help: "API requests left in the rate-limit window of the pool's credential at the forge (-1: unknown).",
		}, []string{"forge", "pool"}),
	}
	m.reg.MustRegister(m.started, m.failed, m.unserved, m.unsaved, m.shortages, m.provision, m.boot, m.jobDuration, m.queueWait,
		m.forgeRequests, m.forgeErrors, m.forgeRateLimit,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		diskCollector{dir: stateDir})
	m.fleet = newFleetCollectors(m.reg)
	return m
}

// WatchPools adds the scrape-time pool collector.
func (m *Metrics) WatchPools(p Pools) { m.reg.MustRegister(poolCollector{p}) }

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Registry exposes the registry to tests.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

func (m *Metrics) VMStarted(p string) { m.started.WithLabelValues(p).Inc() }
func (m *Metrics) VMFailed(p, reason string) {
	m.failed.WithLabelValues(p, reason).Inc()
	m.outcomes.add(Outcome{Time: time.Now(), Pool: p, Reason: reason})
}
func (m *Metrics) UnservedJob()           { m.unserved.Inc() }
func (m *Metrics) RecordUnsaved(p string) { m.unsaved.WithLabelValues(p).Inc() }

// HostShortage implements pool.Observer.
func (m *Metrics) HostShortage(p, cause string) { m.shortages.WithLabelValues(p, cause).Inc() }
func (m *Metrics) Provisioned(p string, d time.Duration) {
	m.provision.WithLabelValues(p).Observe(d.Seconds())
}
func (m *Metrics) Booted(p string, d time.Duration) { m.boot.WithLabelValues(p).Observe(d.Seconds()) }
func (m *Metrics) JobDone(p string, d time.Duration) {
	m.jobDuration.WithLabelValues(p).Observe(d.Seconds())
	m.outcomes.add(Outcome{Time: time.Now(), Pool: p})
}
func (m *Metrics) QueueWait(p string, d time.Duration) {
	m.queueWait.WithLabelValues(p).Observe(d.Seconds())
}

var phases = []vmstate.Phase{vmstate.Creating, vmstate.Booting, vmstate.Idle, vmstate.Busy}

var (
	runnersDesc = prometheus.NewDesc("fireactions_runners", "VMs (each with one runner) by pool and phase.", []string{"pool", "phase"}, nil)
	queuedDesc  = prometheus.NewDesc("fireactions_pool_queued_jobs", "Queued jobs assigned to the pool at the last reconcile.", []string{"pool"}, nil)
	limitDesc   = prometheus.NewDesc("fireactions_pool_max", "The pool's current max.", []string{"pool"}, nil)
	pausedDesc  = prometheus.NewDesc("fireactions_pool_paused", "1 when the pool is paused.", []string{"pool"}, nil)
	goneDesc    = prometheus.NewDesc("fireactions_pool_demand_source_deleted",
		"1 when the pool's demand source at the forge (a GitHub scale set) was deleted: it starts no VM until a reload or restart.", []string{"pool"}, nil)
)

var removalsPendingDesc = prometheus.NewDesc("fireactions_runner_removals_pending",
	"Runners of ended VMs whose removal at the forge failed and is being retried.", []string{"pool"}, nil)

type poolCollector struct{ p Pools }

func (c poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- runnersDesc
	ch <- queuedDesc
	ch <- limitDesc
	ch <- pausedDesc
	ch <- goneDesc
	ch <- removalsPendingDesc
}

func (c poolCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.p.Pools() {
		for _, ph := range phases {
			ch <- prometheus.MustNewConstMetric(runnersDesc, prometheus.GaugeValue, float64(s.VMs[ph]), s.Name, string(ph))
		}
		ch <- prometheus.MustNewConstMetric(queuedDesc, prometheus.GaugeValue, float64(s.Queued), s.Name)
		ch <- prometheus.MustNewConstMetric(limitDesc, prometheus.GaugeValue, float64(s.Max), s.Name)
		ch <- prometheus.MustNewConstMetric(pausedDesc, prometheus.GaugeValue, one(s.Paused), s.Name)
		ch <- prometheus.MustNewConstMetric(goneDesc, prometheus.GaugeValue, one(s.SourceDeleted), s.Name)
		ch <- prometheus.MustNewConstMetric(removalsPendingDesc, prometheus.GaugeValue, float64(s.RemovalsPending), s.Name)
	}
}

// one is 1 for true, 0 for false.
func one(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

var (
	diskFreeDesc = prometheus.NewDesc("fireactions_state_disk_free_bytes", "Free bytes on the state directory's file system.", nil, nil)
	diskSizeDesc = prometheus.NewDesc("fireactions_state_disk_size_bytes", "Size of the state directory's file system.", nil, nil)
)

type diskCollector struct{ dir string }

func (c diskCollector) Describe(ch chan<- *prometheus.Desc) { ch <- diskFreeDesc; ch <- diskSizeDesc }

func (c diskCollector) Collect(ch chan<- prometheus.Metric) {
	var st syscall.Statfs_t
	if syscall.Statfs(c.dir, &st) != nil {
		return
	}
	ch <- prometheus.MustNewConstMetric(diskFreeDesc, prometheus.GaugeValue, float64(st.Bavail)*float64(st.Bsize))
	ch <- prometheus.MustNewConstMetric(diskSizeDesc, prometheus.GaugeValue, float64(st.Blocks)*float64(st.Bsize))
}
