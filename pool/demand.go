package pool

import (
	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// assign gives each queued job to the first pool, in configuration order,
// that uses the job's forge and offers all of the job's labels; a job with
// no labels goes to the first pool that takes untagged jobs (GitLab's
// run_untagged). It returns the jobs per pool and the jobs no pool can
// serve.
func assign(pools []poolView, jobs map[string][]forge.Job) (perPool map[string][]forge.Job, unserved []forge.Job) {
	perPool = map[string][]forge.Job{}
	for forgeName, js := range jobs {
	job:
		for _, j := range js {
			for _, p := range pools {
				if p.forge == forgeName && (forge.MatchLabels(j.Labels, p.labels) || len(j.Labels) == 0 && p.untagged) {
					perPool[p.name] = append(perPool[p.name], j)
					continue job
				}
			}
			unserved = append(unserved, j)
		}
	}
	return perPool, unserved
}

// poolView is what assignment needs to know of a pool.
type poolView struct {
	name, forge string
	labels      []string
	untagged    bool // also takes jobs without labels
}

// counts are a pool's VMs by what they can do.
type counts struct {
	busy   int // running a job
	unbusy int // creating, booting or idle: capacity for queued jobs
}

// toStart is how many VMs a pool should start now: enough that the VMs not
// yet busy cover min_idle plus the queued jobs, never more than max in all.
func toStart(c counts, minIdle, max, queued int) int {
	want := minIdle + queued - c.unbusy
	room := max - c.busy - c.unbusy
	return clamp(min(want, room))
}

// surplus is how many idle VMs a pool holds beyond min_idle plus the
// queued jobs; only idle VMs are ever removed for it.
func surplus(c counts, minIdle, queued int) int {
	return clamp(c.unbusy - (minIdle + queued))
}

func clamp(n int) int {
	if n < 0 {
		return 0
	}
	return n
}
