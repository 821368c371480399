package api

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/metrics"
	"github.com/nixos-fireactions/nixos-fireactions/vmstate"
)

// Insights is what the status page shows beyond the Backend: the VMs'
// recent outcomes and the boot-time and queue-wait distributions;
// *metrics.Metrics satisfies it.
type Insights interface {
	RecentOutcomes() []metrics.Outcome
	Distributions() []metrics.Distribution
}

// FleetView is the fleet as the status page shows it: the hosts that
// share this host's demand (package fleet's presence keys), read when
// the page loads.
type FleetView interface {
	FleetHosts(ctx context.Context) ([]FleetHost, error)
	// Reachable: this host is in its fleet now (NATS reachable).
	Reachable() bool
}

// FleetHost is one host of the fleet.
type FleetHost struct {
	HostID   string
	Since    time.Time     // when it joined
	LastSeen time.Duration // since its presence was last refreshed
	Claims   int           // the claims on queued jobs it holds
	Pools    string        // its free room and idle VMs per pool, as published
}

// fleetReadTimeout bounds reading the fleet's hosts for one page load:
// a NATS that does not answer shows as an error row, not a hung page.
const fleetReadTimeout = 2 * time.Second

// statusRefresh is how often the page reloads itself.
const statusRefresh = 10 * time.Second

//go:embed status.html.tmpl
var statusHTML string

var statusTemplate = template.Must(template.New("status").Parse(statusHTML))

// statusPage is what the template renders. It is built from chosen
// fields only, never from whole records: nothing secret can reach it.
type statusPage struct {
	Generated string
	Refresh   int
	Pools     []statusPool
	VMs       []statusVM
	Outcomes  []statusOutcome
	Charts    []statusChart
	Fleet     *statusFleet // nil: no fleet
}

type statusFleet struct {
	Reachable bool
	Error     string
	Hosts     []statusHost
}

type statusHost struct {
	HostID, Since, LastSeen, Pools string
	Claims                         int
}

type statusPool struct {
	Name, Forge, Scope                         string
	MinIdle, Max, Starting, Idle, Busy, Queued int
	RemovalsPending                            int
	Paused, SourceDeleted                      bool
}

type statusVM struct {
	ID, Pool, Phase, Age, Job, Runner string
}

type statusOutcome struct {
	Time, Pool, Outcome string
	Failed              bool
}

// statusChart is one distribution drawn as an inline SVG bar chart.
type statusChart struct {
	Title, Metric string
	Count         uint64
	Mean          string
	Width, Height int
	Bars          []statusBar
}

type statusBar struct {
	X, Y, W, H int
	Label      string // the bucket's range, shown on hover
	Count      uint64
}

const (
	barWidth    = 22
	chartHeight = 80
)

// status is GET /status: a self-refreshing HTML page of the pools, the
// VMs, their recent outcomes and two distributions. It fetches nothing
// (no script, no style sheet, no image); the CSP says so to the browser.
func (s *server) status(w http.ResponseWriter, r *http.Request) {
	t := now()
	page := statusPage{Generated: t.UTC().Format(time.RFC3339), Refresh: int(statusRefresh / time.Second)}
	for _, p := range s.b.Pools() {
		page.Pools = append(page.Pools, statusPool{
			Name: p.Name, Forge: p.Forge, Scope: p.Scope, MinIdle: p.MinIdle, Max: p.Max,
			Starting: p.VMs[vmstate.Creating] + p.VMs[vmstate.Booting],
			Idle:     p.VMs[vmstate.Idle], Busy: p.VMs[vmstate.Busy], Queued: p.Queued,
			RemovalsPending: p.RemovalsPending, Paused: p.Paused, SourceDeleted: p.SourceDeleted,
		})
	}
	for _, v := range s.b.SortedVMs() {
		age := "-"
		if !v.Created.IsZero() {
			age = max(0, t.Sub(v.Created)).Round(time.Second).String()
		}
		page.VMs = append(page.VMs, statusVM{ID: v.ID, Pool: v.Pool, Phase: string(v.Phase), Age: age, Job: v.Job, Runner: v.RunnerName})
	}
	if s.fleet != nil {
		page.Fleet = fleetSection(r.Context(), s.fleet)
	}
	if s.insights != nil {
		for _, o := range s.insights.RecentOutcomes() {
			row := statusOutcome{Time: o.Time.UTC().Format(time.RFC3339), Pool: o.Pool, Outcome: "job ended"}
			if o.Reason != "" {
				row.Outcome, row.Failed = "failed: "+o.Reason, true
			}
			page.Outcomes = append(page.Outcomes, row)
		}
		for _, d := range s.insights.Distributions() {
			page.Charts = append(page.Charts, chartOf(d))
		}
	}
	var buf bytes.Buffer
	if err := statusTemplate.Execute(&buf, page); err != nil {
		s.log.Error("render the status page", "err", err)
		writeError(w, http.StatusInternalServerError, "render the status page: "+err.Error())
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf.Bytes())
}

// fleetSection reads the fleet's hosts for the page, within
// fleetReadTimeout.
func fleetSection(ctx context.Context, f FleetView) *statusFleet {
	ctx, cancel := context.WithTimeout(ctx, fleetReadTimeout)
	defer cancel()
	sec := &statusFleet{Reachable: f.Reachable()}
	hosts, err := f.FleetHosts(ctx)
	if err != nil {
		sec.Error = err.Error()
	}
	for _, h := range hosts {
		sec.Hosts = append(sec.Hosts, statusHost{HostID: h.HostID, Since: h.Since.UTC().Format(time.RFC3339),
			LastSeen: h.LastSeen.Round(time.Second).String() + " ago", Claims: h.Claims, Pools: h.Pools})
	}
	return sec
}

// chartOf scales a distribution's bars to the chart's height.
func chartOf(d metrics.Distribution) statusChart {
	c := statusChart{Title: d.Title, Metric: d.Metric, Count: d.Count, Mean: "-",
		Width: barWidth * len(d.Buckets), Height: chartHeight}
	if d.Count > 0 {
		c.Mean = seconds(d.Sum / float64(d.Count))
	}
	var most uint64
	for _, b := range d.Buckets {
		most = max(most, b.Count)
	}
	lower := 0.0
	for i, b := range d.Buckets {
		h := 0
		if most > 0 && b.Count > 0 {
			h = max(1, int(math.Round(float64(b.Count)/float64(most)*(chartHeight-2))))
		}
		label := fmt.Sprintf("%s–%s: %d", seconds(lower), seconds(b.UpperBound), b.Count)
		c.Bars = append(c.Bars, statusBar{X: i*barWidth + 1, Y: chartHeight - h, W: barWidth - 2, H: h, Label: label, Count: b.Count})
		lower = b.UpperBound
	}
	return c
}

// seconds formats a bucket bound or a mean for people.
func seconds(s float64) string {
	switch {
	case math.IsInf(s, 1):
		return "∞"
	case s < 10:
		return strconv.FormatFloat(s, 'g', 3, 64) + "s"
	default:
		return time.Duration(s * float64(time.Second)).Round(time.Second).String()
	}
}
