package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// recentOutcomes is how many VM outcomes the status page can list.
const recentOutcomes = 50

// Outcome is one event at a VM's end, as the status page lists it: its
// runner exited after a job (Reason empty; pool.Observer's JobDone), or
// the VM ended without its job done, with the failure's reason (one of
// pool's Reason* constants; VMFailed). A runner that exited non-zero
// after its job gives both, the second with reason runner_exit.
type Outcome struct {
	Time   time.Time
	Pool   string
	Reason string
}

// outcomeRing keeps the last recentOutcomes outcomes.
type outcomeRing struct {
	mu   sync.Mutex
	buf  []Outcome
	next int
}

func (r *outcomeRing) add(o Outcome) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.buf) < recentOutcomes {
		r.buf = append(r.buf, o)
		return
	}
	r.buf[r.next] = o
	r.next = (r.next + 1) % recentOutcomes
}

// newestFirst copies the ring, newest outcome first.
func (r *outcomeRing) newestFirst() []Outcome {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Outcome, 0, len(r.buf))
	for i := range r.buf {
		out = append(out, r.buf[(r.next+len(r.buf)-1-i)%len(r.buf)])
	}
	return out
}

// RecentOutcomes is the last outcomes of VMs, newest first.
func (m *Metrics) RecentOutcomes() []Outcome { return m.outcomes.newestFirst() }

// Bucket is one bar of a distribution: the observations above the
// previous bucket's bound up to UpperBound (+Inf for the last).
type Bucket struct {
	UpperBound float64
	Count      uint64
}

// Distribution is a histogram summed over every pool.
type Distribution struct {
	Metric  string // the histogram's metric name
	Title   string
	Count   uint64
	Sum     float64
	Buckets []Bucket // non-cumulative, in bound order, +Inf last
}

// Distributions are the boot-time and queue-wait histograms, summed
// over the pools, read from the same collectors /metrics serves.
func (m *Metrics) Distributions() []Distribution {
	return []Distribution{
		sumHistograms(m.boot, "fireactions_vm_boot_seconds", "Boot time (VMM start to runner ready)"),
		sumHistograms(m.queueWait, "fireactions_job_queue_wait_seconds", "Queue wait (job queued to picked up)"),
	}
}

func sumHistograms(h *prometheus.HistogramVec, name, title string) Distribution {
	d := Distribution{Metric: name, Title: title}
	cum := make([]uint64, len(seconds))
	ch := make(chan prometheus.Metric, 16)
	go func() { h.Collect(ch); close(ch) }()
	for pm := range ch {
		var w dto.Metric
		if pm.Write(&w) != nil || w.Histogram == nil {
			continue
		}
		d.Count += w.Histogram.GetSampleCount()
		d.Sum += w.Histogram.GetSampleSum()
		for i, b := range w.Histogram.GetBucket() {
			if i < len(cum) {
				cum[i] += b.GetCumulativeCount()
			}
		}
	}
	var prev uint64
	for i, bound := range seconds {
		d.Buckets = append(d.Buckets, Bucket{UpperBound: bound, Count: cum[i] - prev})
		prev = cum[i]
	}
	d.Buckets = append(d.Buckets, Bucket{UpperBound: inf, Count: d.Count - prev})
	return d
}
